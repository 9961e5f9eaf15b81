"""params.yaml loading: schema validation with defaults, clear errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from robustmer.config import ModelSpec, TrainConfig, load_params, validate_params
from robustmer.errors import ConfigError
from robustmer.models.registry import check_models

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_validate_and_fill_defaults() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params["dataset"] == "builtin"
    assert params["train"]["selection_metric"] == "ua"
    assert params["models"]["fusion_mlp"]["num_layers"] == 3  # filled from the schema default


def test_minimal_params_get_every_default() -> None:
    params = validate_params(
        {
            "seed": 1,
            "dataset": "builtin",
            "models": {"m": {"arch": "early_fusion", "features": {"audio": "egemaps_functionals"}}},
        }
    )
    assert params["acquire"]["builtin"]["n_speakers"] == 10
    assert params["extract"]["video"] == {"face_hog": {"kind": "face_hog"}}
    assert params["extract"]["on_error"] == "fail"
    assert params["validate"]["max_placeholder_fraction"] == 0.05
    assert params["mlflow"]["tracking_uri"] == "sqlite:///mlflow.db"
    spec = ModelSpec.from_params(params, "m")
    assert spec.hidden_dim == 128 and spec.features == {"audio": "egemaps_functionals"}
    assert TrainConfig.from_params(params).val_speakers == 1


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"epohcs": 3}}, "train"),
        ({"models": {"m": {"arch": "nope", "features": {"audio": "x"}}}}, "models.m.arch"),
        ({"models": {"m": {"arch": "early_fusion", "features": {"smell": "x"}}}}, "models.m"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_values_name_the_key(patch: dict, key: str) -> None:
    raw = {
        "seed": 1,
        "dataset": "builtin",
        "models": {"m": {"arch": "early_fusion", "features": {"audio": "egemaps_functionals"}}},
    }
    raw.update(patch)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_models(validate_params(raw))


def test_unknown_model_name_lists_known(tmp_path: Path) -> None:
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(ConfigError, match="fusion_mlp"):
        ModelSpec.from_params(params, "missing_model")


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="mapping"):
        load_params(scalar)


def _with_dataset(dataset: str, **nmer: object) -> dict:
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw["datasets"] = [dataset]
    raw["models"]["nmer"].update(nmer)
    return raw


def test_per_dataset_keys_pick_the_paper_preset_for_the_paper_corpus() -> None:
    from robustmer.config import preset

    on_iemocap = validate_params(_with_dataset("iemocap"))["models"]["nmer"]
    assert on_iemocap["features"] == preset("nmer", "iemocap")["features"]
    assert "per_dataset" not in on_iemocap
    on_msp = validate_params(_with_dataset("msp_improv"))["models"]["nmer"]
    assert on_msp["features"] == preset("nmer", "msp_improv")["features"]
    builtin = validate_params(_with_dataset("builtin"))["models"]["nmer"]
    assert builtin["features"] == preset("nmer", "builtin_cpu")["features"]
    imder = validate_params(_with_dataset("mosi"))["models"]["imder"]
    assert (
        imder["task"] == "regression" and imder["features"] == preset("imder", "mosi")["features"]
    )


def test_per_dataset_keys_win_and_merge_dicts_one_level() -> None:
    own = {"iemocap": {"hidden_dim": 96, "train": {"epochs": 3}}}
    raw = _with_dataset("iemocap", train={"epochs": 7, "lr": 0.01}, per_dataset=own)
    entry = validate_params(raw)["models"]["nmer"]
    assert entry["hidden_dim"] == 96
    assert entry["train"]["epochs"] == 3 and entry["train"]["lr"] == 0.01


def test_per_dataset_with_an_unknown_dataset_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"models.nmer.per_dataset: unknown dataset\(s\) \['iemocapp'\]"
    ):
        validate_params(_with_dataset("builtin", per_dataset={"iemocapp": {"preset": "iemocap"}}))


def test_a_stage_needs_one_of_the_projects_datasets() -> None:
    """`datasets:` lists the corpora; `dataset` alone means a list of one; with several, a
    stage must be told which (the CLI's --dataset) and only a listed one is accepted."""
    from robustmer.config import require_dataset

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw.pop("datasets")
    single = validate_params({**raw, "dataset": "emodb"})
    assert single["datasets"] == ["emodb"] and require_dataset(single) == "emodb"
    several = validate_params({**raw, "datasets": ["builtin", "emodb"]})
    assert "dataset" not in several
    with pytest.raises(ConfigError, match=r"lists several datasets \(builtin, emodb\).*--dataset"):
        require_dataset(several)
    chosen = validate_params({**raw, "datasets": ["builtin", "emodb"]}, dataset="emodb")
    assert require_dataset(chosen) == "emodb"
    with pytest.raises(ConfigError, match="'meld' is not one of the project's datasets"):
        validate_params({**raw, "datasets": ["builtin", "emodb"]}, dataset="meld")
