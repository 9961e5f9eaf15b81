"""Load params.yaml, validate it against the package's params schema and fill in defaults.

DVC and Snakemake both hand the same params.yaml to the CLI; this module is the single reader,
so a typo in a key fails every front door the same way, with the key's path in the message.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from robustmer.config_options import check_options
from robustmer.errors import ConfigError
from robustmer.metrics import SELECTION_METRICS

# The schema default of `train.selection_metric`; a regression model inheriting it gets `mae`.
CLASSIFICATION_SELECTION_DEFAULT = "ua"
REGRESSION_SELECTION_DEFAULT = "mae"

Params = dict[str, Any]
log = logging.getLogger(__name__)

DEFAULT_PARAMS = Path("params.yaml")
# The keys of a model entry that a search may set (`tune.spaces`) and a `tuned` file may hold.
TUNABLE_KEYS = frozenset({"hidden_dim", "dropout", "num_layers", "options", "train", "pretrain"})


def schema() -> dict[str, Any]:
    text = resources.files("robustmer").joinpath("resources/params.schema.yaml").read_text()
    return yaml.safe_load(text)


def _with_defaults(validator_cls: type) -> type:
    """Extend a jsonschema validator so that `default` values are written into the instance."""
    validate_properties = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: dict, instance: Any, sub_schema: dict) -> Any:
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if "default" in subschema and key not in instance:
                    instance[key] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, sub_schema)

    return jsonschema.validators.extend(validator_cls, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def method_dir(arch: str) -> Path | None:
    """The folder of method package `arch` (built in, or a plug-in package of that name).

    Found without importing the method: params are read by every stage, and only the model
    stages should load (and depend on) method code.
    """
    for module in (f"robustmer.models.{arch}", arch):
        try:
            found = importlib.util.find_spec(module) if arch.isidentifier() else None
        except (ImportError, ValueError):
            found = None
        if found is not None and found.submodule_search_locations:
            return Path(next(iter(found.submodule_search_locations)))
    return None


def preset(arch: str, name: str) -> dict[str, Any]:
    """One named preset of a method (`presets.yaml` in its package, e.g. models/nmer/)."""
    folder = method_dir(arch)
    path = folder / "presets.yaml" if folder is not None else None
    if path is None or not path.is_file():
        raise ConfigError(f"architecture {arch!r} has no presets")
    presets = yaml.safe_load(path.read_text(encoding="utf-8"))
    if name not in presets:
        raise ConfigError(f"{arch} preset {name!r} not found (known: {', '.join(presets)})")
    return copy.deepcopy(presets[name])


def dataset_names() -> list[str]:
    """Every dataset name params may use (the registry's, as the schema lists them)."""
    return list(schema()["$defs"]["dataset_name"]["enum"])


def project_datasets(raw: dict[str, Any]) -> list[str]:
    """The project's datasets: `datasets`, or `[dataset]` in a params file of one dataset."""
    listed = raw.get("datasets")
    if listed is None:
        return [raw["dataset"]] if raw.get("dataset") is not None else []
    return list(listed) if isinstance(listed, list) else []


def with_dataset(raw: dict[str, Any], dataset: str | None, source: str) -> dict[str, Any]:
    """`raw` with `datasets` filled in and `dataset` set to the one a stage runs on.

    `dataset` (the CLI's --dataset) must be one of the project's; without it, a project of one
    dataset runs on that one, and a project of several leaves `dataset` unset (the stages that
    need one say so; see `require_dataset`).
    """
    out = dict(raw)
    listed = project_datasets(out)
    out.setdefault("datasets", listed)
    chosen = dataset if dataset is not None else out.get("dataset")
    if chosen is None and len(listed) == 1:
        chosen = listed[0]
    if chosen is not None and listed and chosen not in listed:
        raise ConfigError(
            f"{source}: dataset {chosen!r} is not one of the project's datasets {listed}; "
            f"add it to `datasets`"
        )
    if chosen is None:
        out.pop("dataset", None)
    else:
        out["dataset"] = chosen
    return out


def require_dataset(params: Params, source: str = "params.yaml") -> str:
    """The dataset this stage runs on; an error naming the choices when the project has several."""
    if params.get("dataset") is None:
        raise ConfigError(
            f"{source} lists several datasets ({', '.join(params['datasets'])}): name the one to "
            "run on with --dataset"
        )
    return str(params["dataset"])


def apply_per_dataset(raw: dict[str, Any]) -> dict[str, Any]:
    """Model entries with their `per_dataset.<dataset>` keys applied for the params' `dataset`.

    NMER runs with its iemocap preset on IEMOCAP and its msp_improv preset on MSP-IMPROV from
    one entry: `per_dataset: {iemocap: {preset: iemocap}, msp_improv: {preset: msp_improv}}`.
    Those keys win over the entry's own (dicts such as `train` merge one level), and the preset
    they name is expanded afterwards. A dataset name the registry does not know is an error.
    """
    out = copy.deepcopy(raw)
    known = dataset_names()
    for name, entry in (out.get("models") or {}).items():
        if not isinstance(entry, dict) or "per_dataset" not in entry:
            continue
        table = entry.pop("per_dataset") or {}
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            raise ConfigError(f"models.{name}.per_dataset: a mapping dataset -> model entry keys")
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ConfigError(
                f"models.{name}.per_dataset: unknown dataset(s) {unknown} "
                f"(known: {', '.join(known)})"
            )
        for key, value in (table.get(out.get("dataset")) or {}).items():
            if isinstance(value, dict) and isinstance(entry.get(key), dict):
                entry[key] = {**entry[key], **value}
            else:
                entry[key] = value
    return out


def expand_presets(raw: dict[str, Any]) -> dict[str, Any]:
    """Fill model entries that name a `preset` with its values (the entry's own keys win)."""
    out = copy.deepcopy(raw)
    for entry in (out.get("models") or {}).values():
        if isinstance(entry, dict) and entry.get("preset"):
            base = preset(str(entry.get("arch")), str(entry["preset"]))
            for key, value in entry.items():
                if isinstance(value, dict) and isinstance(base.get(key), dict):
                    base[key] = {**base[key], **value}
                else:
                    base[key] = value
            entry.clear()
            entry.update(base)
    return out


PROTOCOL_SECTIONS = ("acquire", "cv", "train", "report")


def protocol_names() -> list[str]:
    """The evaluation protocols shipped in robustmer/resources/protocols/."""
    folder = resources.files("robustmer").joinpath("resources/protocols")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def protocol(name: str) -> dict[str, Any]:
    """One protocol: the datasets it fits and the keys it fixes (`PROTOCOL_SECTIONS`)."""
    if name not in protocol_names():
        raise ConfigError(f"unknown protocol {name!r} (known: {', '.join(protocol_names())})")
    path = resources.files("robustmer").joinpath(f"resources/protocols/{name}.yaml")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def apply_protocol(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """The keys of the dataset's protocol (`protocol: {<dataset>: <name>}`) over params.yaml's,
    while a stage runs on that dataset: a protocol is a fixed way of evaluating, so its keys
    win (a model's own `train` keys still win over the `train` section, as always)."""
    table = raw.get("protocol") or {}
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: protocol: a mapping dataset -> protocol name")
    listed = project_datasets(raw)
    for dataset, name in table.items():
        if dataset not in listed:
            raise ConfigError(
                f"{source}: protocol.{dataset}: not one of the project's datasets {listed}"
            )
        fits = protocol(str(name)).get("datasets") or []
        if dataset not in fits:
            raise ConfigError(
                f"{source}: protocol.{dataset}: protocol {name!r} fits {', '.join(fits)}, not "
                f"{dataset!r}"
            )
    dataset = raw.get("dataset")
    if dataset not in table:
        return raw
    out = copy.deepcopy(raw)
    overridden = []
    for section in PROTOCOL_SECTIONS:
        keys = protocol(str(table[dataset])).get(section) or {}
        if section == "acquire":
            acquire = out.setdefault("acquire", {}) or {}
            out["acquire"] = acquire
            target = acquire.setdefault(dataset, {}) or {}
            acquire[dataset] = target
        else:
            target = out.setdefault(section, {})
        for key, value in keys.items():
            if key in target and target[key] != value:
                overridden.append(f"{section}.{key}")
            target[key] = copy.deepcopy(value)
    if overridden:
        log.info("protocol %s on %s fixes %s (params.yaml's values do not apply)",
                 table[dataset], dataset, ", ".join(overridden))  # fmt: skip
    return out


def merge_entry(entry: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`entry` with `overrides` applied: dicts (train, pretrain, options) merge one level."""
    out = copy.deepcopy(entry)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_tuned(raw: dict[str, Any]) -> dict[str, Any]:
    """Apply the search results of the models in `tune.models` (tuned/<dataset>/<model>.yaml,
    written by `robustmer tune`) over their entries, for the dataset the stage runs on.

    A missing file is left to the stages that build the model (`require_tuned`): listing a
    model in `tune.models` must not stop `extract` before its search has run.
    """
    from robustmer.paths import tuned_file

    dataset = raw.get("dataset")
    if dataset is None:
        return raw
    out = copy.deepcopy(raw)
    for name in (out.get("tune") or {}).get("models") or []:
        entry = (out.get("models") or {}).get(name)
        path = tuned_file(str(dataset), name)
        if not isinstance(entry, dict) or not path.is_file():
            continue
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(values, dict) or not set(values) <= TUNABLE_KEYS:
            raise ConfigError(
                f"{path}: must map keys of a model entry ({', '.join(sorted(TUNABLE_KEYS))}) to "
                f"values; rerun `robustmer tune {name} --dataset {dataset}`"
            )
        out["models"][name] = merge_entry(entry, values)
    return out


def _check_tune(params: Params, source: str) -> None:
    """Every model in `tune.models` exists and has a search space."""
    tune = params.get("tune") or {}
    for name in tune.get("models") or []:
        if name not in params["models"]:
            raise ConfigError(f"{source}: tune.models: {name!r} is not in `models`")
        if name not in (tune.get("spaces") or {}):
            raise ConfigError(
                f"{source}: tune.models: {name!r} has no search space; add tune.spaces.{name} "
                "(docs/tuning.md)"
            )


def require_tuned(params: Params, model: str) -> None:
    """A model listed in `tune.models` is trained and scored with its search's result only."""
    from robustmer.paths import tuned_file

    if model not in params.get("tune", {}).get("models", []):
        return
    ds = require_dataset(params)
    path = tuned_file(ds, model)
    if not path.is_file():
        raise ConfigError(
            f"{path} not found: {model} is listed in tune.models; run `robustmer tune {model} "
            f"--dataset {ds}` (or `dvc repro tune@{ds}-{model}`) first, or remove it from the list"
        )


def validate_params(
    raw: dict[str, Any], source: str = "params", dataset: str | None = None, tuned: bool = True
) -> Params:
    """Return a validated copy of `raw` with presets expanded and every default filled in.

    `dataset` picks the dataset a stage runs on (see `with_dataset`); its `per_dataset` model
    keys apply, and with `tuned` the search results of the models in `tune.models`.
    """
    chosen = apply_protocol(with_dataset(raw, dataset, source), source)
    params = expand_presets(apply_per_dataset(chosen))
    if tuned:
        params = apply_tuned(params)
    # Two passes: the first fills defaults of nested objects created by outer defaults.
    validator = _Validator(schema())
    for _ in range(2):
        errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
        if errors:
            lines = [
                f"  {'.'.join(map(str, e.absolute_path)) or '<top level>'}: {e.message}"
                for e in errors[:10]
            ]
            raise ConfigError(
                f"{source} does not match the schema (robustmer/resources/params.schema.yaml):\n"
                + "\n".join(lines)
                + "\nFix the keys above (see the schema for allowed values)."
            )
    check_options(params, source)  # adapter and extractor options: not in the schema
    _check_cross_corpus(params, source)
    _check_tune(params, source)
    for name in params["models"]:
        _check_task(params, ModelSpec.from_params(params, name), source)
    return params


def _check_cross_corpus(params: Params, source: str) -> None:
    """Each cross-corpus evaluation names project datasets, models, conditions and label maps."""
    section = params["cross_corpus"]
    for name, cell in section["evaluations"].items():
        where = f"{source}: cross_corpus.evaluations.{name}"
        for role in ("train", "test"):
            if cell[role] not in params["datasets"]:
                raise ConfigError(f"{where}.{role}: {cell[role]!r} is not in `datasets` "
                                  f"{params['datasets']}")  # fmt: skip
            if cell[role] not in section["label_maps"]:
                raise ConfigError(f"{where}: no cross_corpus.label_maps.{cell[role]} (its class "
                                  "-> the shared class)")  # fmt: skip
        if cell["train"] == cell["test"]:
            raise ConfigError(f"{where}: train and test are both {cell['train']!r}; the grid "
                              "already scores a dataset on itself")  # fmt: skip
        for key, known in (("models", params["models"]),
                           ("conditions", params["corrupt"]["conditions"])):  # fmt: skip
            unknown = sorted(set(cell[key]) - set(known))
            if unknown:
                raise ConfigError(f"{where}.{key}: unknown {unknown} (known: {sorted(known)})")


def _check_task(params: Params, spec: ModelSpec, source: str) -> None:
    """Load-time checks the schema cannot express: the selection metric fits the task.

    What only the method knows (its options, its tasks) is checked by the model stages
    (`models.registry.check_models`), so params stay readable without loading method code.
    """
    stages = ("train", "pretrain") if spec.pretrain else ("train",)
    for stage in stages:
        selection_metric(params, spec, stage, source)


def selection_metric(
    params: Params, spec: ModelSpec | None = None, stage: str = "train", source: str = "params"
) -> str:
    """The validation metric that picks a model's best epoch, checked against its task.

    The model's own `train` (or `pretrain`) override wins over the shared `train` section. A
    regression model that inherits the classification default (`ua`) from the shared section
    uses `mae` instead, so one params file can hold models of both tasks; any other metric of
    the wrong task is an error naming the key to change.
    """
    shared = str(params["train"]["selection_metric"])
    if spec is None:  # no model, no task to check against
        return shared
    task = spec.task
    own = spec.pretrain if stage == "pretrain" else spec.train
    if "selection_metric" in own:
        metric, key = own["selection_metric"], f"models.{spec.name}.{stage}.selection_metric"
    else:
        metric, key = shared, "train.selection_metric"
        if task == "regression" and metric == CLASSIFICATION_SELECTION_DEFAULT:
            metric = REGRESSION_SELECTION_DEFAULT
    allowed = SELECTION_METRICS[task]
    if metric not in allowed:
        raise ConfigError(
            f"{source}: {key} is {metric!r}, which is not a {task} metric, but model "
            f"{spec.name!r} has task: {task}; set models.{spec.name}.{stage}.selection_metric "
            f"to one of {', '.join(allowed)}"
        )
    return str(metric)


def load_params(
    path: str | os.PathLike[str] = DEFAULT_PARAMS, dataset: str | None = None
) -> Params:
    return validate_params(read_params_file(path), source=str(path), dataset=dataset)


def read_params_file(path: str | os.PathLike[str] = DEFAULT_PARAMS) -> dict[str, Any]:
    """The params file as written (a mapping), before presets, defaults and validation."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: params file not found; run from the project root or pass --params"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings: the `train` section, with a model's own overrides on top.

    No defaults here: every value comes from the validated params, whose defaults are written
    once, in the schema's `train` section (src/robustmer/resources/params.schema.yaml).
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    patience: int
    selection_metric: str
    num_threads: int
    workers: int  # processes over (seed, fold) units; not an input of the results
    val_speakers: int
    device: str
    seed: int
    seeds: tuple[int, ...]
    beta1: float
    decay_epochs: int
    grad_clip: float
    grad_clip_mode: str  # "norm" (per sub-network) | "value" (IMDer/MMSA: clamp each entry)
    lr_scheduler: str  # "none" | "plateau" (validation loss) | "cosine" (per step, warm-up)
    plateau_factor: float
    plateau_patience: int
    optimizer: str  # "adam" | "adamw"
    warmup_epochs: float
    min_lr: float
    checkpoint_every_s: float  # resumable epoch checkpoints (training/resume.py)
    average_last: int  # > 0: keep the mean weights of the last epochs (training/weight_average)

    @classmethod
    def from_params(
        cls, params: Params, spec: ModelSpec | None = None, stage: str = "train"
    ) -> TrainConfig:
        """`stage` "train" applies `spec.train` overrides, "pretrain" applies `spec.pretrain`."""
        t = dict(params["train"])
        if spec is not None:
            t.update((spec.pretrain if stage == "pretrain" else spec.train) or {})
        if t["lr_scheduler"] == "cosine" and t["decay_epochs"]:
            raise ConfigError("decay_epochs and lr_scheduler cosine both set the LR; keep one")
        if t["decay_epochs"] >= t["epochs"]:
            raise ConfigError(
                f"decay_epochs {t['decay_epochs']} must be below epochs {t['epochs']}"
            )
        if t["average_last"] and t["patience"]:
            raise ConfigError(
                f"average_last {t['average_last']} averages the last epochs of a fixed-length "
                f"run, which early stopping (patience {t['patience']}) would end early: set "
                "patience: 0 beside it"
            )
        return cls(
            epochs=t["epochs"],
            batch_size=t["batch_size"],
            lr=t["lr"],
            weight_decay=t["weight_decay"],
            patience=t["patience"],
            selection_metric=selection_metric(params, spec, stage),
            num_threads=t["num_threads"],
            workers=t["workers"],
            val_speakers=params["cv"]["val_speakers"],
            device=params["device"],
            seed=params["seed"],
            seeds=tuple(t["seeds"]),
            beta1=t["beta1"],
            decay_epochs=t["decay_epochs"],
            grad_clip=t["grad_clip"],
            grad_clip_mode=t["grad_clip_mode"],
            lr_scheduler=t["lr_scheduler"],
            plateau_factor=t["plateau_factor"],
            plateau_patience=t["plateau_patience"],
            optimizer=t["optimizer"],
            warmup_epochs=float(t["warmup_epochs"]),
            min_lr=float(t["min_lr"]),
            checkpoint_every_s=float(t["checkpoint_every_s"]),
            average_last=t["average_last"],
        )


def feature_list(entry: str | Sequence[str]) -> tuple[str, ...]:
    """The feature names of one `models.<m>.features` value (a name or a list of names)."""
    return (entry,) if isinstance(entry, str) else tuple(entry)


def _feature_entry(entry: str | Sequence[str]) -> str | tuple[str, ...]:
    """A one-name list reads as that name, so `[x]` and `x` give the same model (and hashes)."""
    names = feature_list(entry)
    return names[0] if len(names) == 1 else names


@dataclass(frozen=True)
class ModelSpec:
    """One entry of params.yaml `models`: the architecture and the features it reads."""

    name: str
    arch: str
    # modality -> feature name, or a tuple of names (read concatenated, in order: `feature_list`)
    features: dict[str, str | tuple[str, ...]]
    hidden_dim: int
    dropout: float
    num_layers: int
    train_corruption: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    pretrain: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"  # or "regression": the manifest's `regression` column

    def store_names(self, modality: str) -> list[str]:
        """The store names (`<modality>/<name>`) of the features read for `modality`."""
        return [f"{modality}/{e}" for e in feature_list(self.features[modality])]

    @classmethod
    def from_params(cls, params: Params, name: str) -> ModelSpec:
        if name not in params["models"]:
            known = ", ".join(sorted(params["models"]))
            raise ConfigError(f"model {name!r} is not in params.yaml `models` (known: {known})")
        m = params["models"][name]
        return cls(
            name=name,
            arch=m["arch"],
            features={k: _feature_entry(v) for k, v in m["features"].items()},
            hidden_dim=m["hidden_dim"],
            dropout=m["dropout"],
            num_layers=m["num_layers"],
            train_corruption=dict(m["train_corruption"]) if m.get("train_corruption") else None,
            options=dict(m.get("options") or {}),
            train=dict(m.get("train") or {}),
            pretrain=dict(m.get("pretrain") or {}),
            task=str(m.get("task", "classification")),
        )
