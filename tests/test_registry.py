"""The dataset registry, the acquire stage's dispatch and its errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robustmer.cli import app
from robustmer.config import schema, validate_params
from robustmer.data.acquire import acquire
from robustmer.data.registry import dataset_info, registry
from robustmer.errors import ConfigError, DataError


def params_for(dataset: str, **acquire_cfg: object) -> dict:
    return validate_params(
        {
            "seed": 1,
            "dataset": dataset,
            "acquire": {dataset: acquire_cfg} if acquire_cfg else {},
            "models": {"m": {"arch": "early_fusion", "features": {"text": "minilm"}}},
        }
    )


def test_schema_accepts_exactly_the_registry_datasets() -> None:
    assert schema()["$defs"]["dataset_name"]["enum"] == list(registry())


def test_every_adapter_resolves_to_a_function() -> None:
    for info in registry().values():
        if info.kind == "generated":
            continue
        assert callable(info.adapter_fn()), info.name
        if info.kind == "pack":
            assert callable(info.files_fn()), info.name
        assert info.licence and info.instructions, info.name
        assert info.citation or info.access == "local", info.name
        assert info.protocol in ("speaker_folds", "splits", "fold_table"), info.name


def test_public_datasets_name_a_url_and_licensed_ones_none() -> None:
    for info in registry().values():
        if info.access == "public":
            assert (info.url or "").startswith(("https://", "http://")), info.name
        if info.access == "licensed":
            assert info.url is None, info.name


def test_licensed_dataset_without_a_copy_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"needs your copy: Request IEMOCAP.*--from PATH"):
        acquire(params_for("iemocap"), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_a_missing_copy_is_named(tmp_path: Path) -> None:
    params = params_for("mosi", path=str(tmp_path / "nowhere.pkl"))
    with pytest.raises(DataError, match=r"nowhere\.pkl: the copy of 'mosi'.*acquire\.mosi\.path"):
        acquire(params, tmp_path / "raw")


def test_unknown_dataset_and_bad_source_keys_fail_in_params() -> None:
    with pytest.raises(ConfigError, match="dataset"):
        params_for("iemocap5")
    with pytest.raises(ConfigError, match="sha256"):
        params_for("emodb", sha256="not-a-digest")


def test_adapter_options_merge_over_registry_defaults() -> None:
    info = dataset_info("meld")
    options = info.resolved_options({"path": "/x", "max_per_split": 10, "download": False})
    assert options["max_per_split"] == 10 and options["drop_missing_clips"] is False
    assert "path" not in options and "download" not in options


def test_cli_lists_datasets_and_shows_instructions() -> None:
    runner = CliRunner()
    listing = runner.invoke(app, ["datasets"])
    assert listing.exit_code == 0
    assert all(name in listing.output for name in registry())
    shown = runner.invoke(app, ["datasets", "mosi"])
    assert "expected splits: {'train': 1284, 'valid': 229, 'test': 686}" in shown.output

    unknown = subprocess.run(
        [sys.executable, "-m", "robustmer.cli", "datasets", "nope"], capture_output=True, text=True
    )
    assert unknown.returncode == 2 and "known datasets: builtin, iemocap" in unknown.stderr


def test_a_failed_acquire_keeps_the_previous_corpus(tmp_path: Path) -> None:
    from dataset_fixtures_raw import build_emodb, write_wav

    source = build_emodb(tmp_path / "emodb").parent
    raw = tmp_path / "raw"
    acquire(params_for("emodb", path=str(source)), raw)
    before = (raw / "metadata.csv").read_bytes()
    write_wav(source / "wav" / "03a01Xa.wav")  # 'X' is no EmoDB emotion letter
    with pytest.raises(DataError, match=r"03a01Xa\.wav"):
        acquire(params_for("emodb", path=str(source)), raw)
    assert (raw / "metadata.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emodb", "raw"]  # no temp leftovers
