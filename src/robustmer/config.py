"""Load params.yaml, validate it against the schema in workflow/schemas/ and fill in defaults.

DVC and Snakemake both hand the same params.yaml to the CLI; this module is the single reader,
so a typo in a key fails every front door the same way, with the key's path in the message.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from robustmer.errors import ConfigError

Params = dict[str, Any]
DEFAULT_PARAMS = Path("params.yaml")


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


def preset(arch: str, name: str) -> dict[str, Any]:
    """One named preset of an architecture (src/robustmer/models/presets/<arch>.yaml)."""
    path = resources.files("robustmer").joinpath("models", "presets", f"{arch}.yaml")
    if not path.is_file():
        raise ConfigError(f"architecture {arch!r} has no presets")
    presets = yaml.safe_load(path.read_text(encoding="utf-8"))
    if name not in presets:
        raise ConfigError(f"{arch} preset {name!r} not found (known: {', '.join(presets)})")
    return copy.deepcopy(presets[name])


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


def validate_params(raw: dict[str, Any], source: str = "params") -> Params:
    """Return a validated copy of `raw` with presets expanded and every default filled in."""
    params = expand_presets(raw)
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
                f"{source} does not match workflow/schemas/params.schema.yaml:\n"
                + "\n".join(lines)
                + "\nFix the keys above (see the schema for allowed values)."
            )
    return params


def load_params(path: str | os.PathLike[str] = DEFAULT_PARAMS) -> Params:
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
    return validate_params(raw, source=str(path))


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings: the `train` section, with a model's own overrides on top."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    patience: int
    selection_metric: str
    num_threads: int
    val_speakers: int
    device: str
    seed: int
    seeds: tuple[int, ...] = (1,)
    beta1: float = 0.9
    decay_epochs: int = 0
    grad_clip: float = 0.0

    @classmethod
    def from_params(
        cls, params: Params, spec: ModelSpec | None = None, stage: str = "train"
    ) -> TrainConfig:
        """`stage` "train" applies `spec.train` overrides, "pretrain" applies `spec.pretrain`."""
        t = dict(params["train"])
        if spec is not None:
            t.update((spec.pretrain if stage == "pretrain" else spec.train) or {})
        if t.get("decay_epochs", 0) >= t["epochs"]:
            raise ConfigError(
                f"decay_epochs {t['decay_epochs']} must be below epochs {t['epochs']}"
            )
        return cls(
            epochs=t["epochs"],
            batch_size=t["batch_size"],
            lr=t["lr"],
            weight_decay=t["weight_decay"],
            patience=t["patience"],
            selection_metric=t["selection_metric"],
            num_threads=t["num_threads"],
            val_speakers=params["cv"]["val_speakers"],
            device=params["device"],
            seed=params["seed"],
            seeds=tuple(t["seeds"]),
            beta1=t.get("beta1", 0.9),
            decay_epochs=t.get("decay_epochs", 0),
            grad_clip=t.get("grad_clip", 0.0),
        )


@dataclass(frozen=True)
class ModelSpec:
    """One entry of params.yaml `models`: the architecture and the features it reads."""

    name: str
    arch: str
    features: dict[str, str]
    hidden_dim: int
    dropout: float
    num_layers: int
    train_corruption: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    pretrain: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Params, name: str) -> ModelSpec:
        if name not in params["models"]:
            known = ", ".join(sorted(params["models"]))
            raise ConfigError(f"model {name!r} is not in params.yaml `models` (known: {known})")
        m = params["models"][name]
        return cls(
            name=name,
            arch=m["arch"],
            features=dict(m["features"]),
            hidden_dim=m["hidden_dim"],
            dropout=m["dropout"],
            num_layers=m["num_layers"],
            train_corruption=dict(m["train_corruption"]) if m.get("train_corruption") else None,
            options=dict(m.get("options") or {}),
            train=dict(m.get("train") or {}),
            pretrain=dict(m.get("pretrain") or {}),
        )
