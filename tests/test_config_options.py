"""Unknown adapter and extractor options fail every stage at params loading, naming the key."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import tiny_params_dict

from robustmer.config import load_params
from robustmer.data.adapter_options import ADAPTER_OPTIONS, option_names
from robustmer.data.registry import registry
from robustmer.errors import ConfigError
from robustmer.features.kinds import KINDS
from robustmer.features.registry import extractor_class


def _write(tmp_path: Path, params: dict[str, Any]) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _robustmer(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "robustmer.cli", *args], cwd=cwd, capture_output=True, text=True
    )


def _with_acquire_typo() -> dict[str, Any]:
    params = tiny_params_dict()
    params["acquire"]["folder"] = {"path": "/data/mine", "n_fold": 3}
    return params


def _with_extractor_typo() -> dict[str, Any]:
    params = tiny_params_dict()
    params["extract"]["audio"] = {"egemaps": {"kind": "opensmile", "feature_sets": "x"}}
    return params


def test_load_params_rejects_an_unknown_adapter_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_params(_write(tmp_path, _with_acquire_typo()))
    message = str(err.value)
    assert "acquire.folder: unknown option(s) n_fold" in message
    assert "did you mean n_folds?" in message
    assert "labels, n_folds" in message and "fix or remove the key" in message


def test_load_params_rejects_an_unknown_dataset_section(tmp_path: Path) -> None:
    params = tiny_params_dict()
    params["acquire"]["foldr"] = {"path": "/data/mine"}
    with pytest.raises(ConfigError, match=r"acquire\.foldr: unknown dataset \(did you mean"):
        load_params(_write(tmp_path, params))


def test_load_params_rejects_an_unknown_extractor_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_params(_write(tmp_path, _with_extractor_typo()))
    message = str(err.value)
    assert "extract.audio.egemaps: unknown option(s) feature_sets" in message
    assert "did you mean feature_set?" in message and "kind 'opensmile'" in message


def test_known_options_and_acquisition_keys_load(tmp_path: Path) -> None:
    params = tiny_params_dict()
    params["acquire"]["ravdess"] = {"download": True, "allow_unverified": True, "n_folds": 4}
    params["acquire"]["emodb"] = {"max_archive_members": 10, "max_unpacked_bytes": 10**9}
    params["acquire"]["mer2024"] = {"path": "/data/mer", "text_column": "english"}
    params["extract"]["audio"] = {"mel": {"kind": "logmel", "n_mels": 40, "vad": True}}
    loaded = load_params(_write(tmp_path, params))
    assert loaded["acquire"]["ravdess"]["n_folds"] == 4


@pytest.mark.parametrize("params", [_with_acquire_typo, _with_extractor_typo])
def test_a_non_acquire_stage_fails_at_once_naming_the_key(tmp_path: Path, params: Any) -> None:
    _write(tmp_path, params())
    proc = _robustmer(tmp_path, "train", "fusion_mlp")
    assert proc.returncode == 2, proc.stderr
    assert "unknown option(s)" in proc.stderr and "Traceback" not in proc.stderr
    assert "acquire.folder" in proc.stderr or "extract.audio.egemaps" in proc.stderr


def test_loading_params_imports_no_adapter_or_extractor_code(tmp_path: Path) -> None:
    params = tiny_params_dict()
    params["acquire"]["mer2024"] = {"path": "/data/mer"}
    params["extract"]["audio"] = {"w2v": {"kind": "hf_speech", "model_path": "/m"}}
    path = _write(tmp_path, params)
    code = (
        "import sys; from robustmer.config import load_params; load_params(sys.argv[1]);"
        "print(sorted(m for m in sys.modules if m.startswith(('robustmer.data.adapters',"
        " 'robustmer.features.', 'torch', 'opensmile', 'transformers', 'pandas'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "['robustmer.features.kinds']"


def test_adapter_option_names_match_the_adapters() -> None:
    """ADAPTER_OPTIONS is what params loading checks; an adapter with its own defaults agrees."""
    for info in registry().values():
        if info.kind == "generated":
            continue
        module = info.adapter.partition(":")[0]
        assert module in ADAPTER_OPTIONS, f"{info.name}: {module} has no ADAPTER_OPTIONS entry"
        assert set(info.options) <= ADAPTER_OPTIONS[module], info.name
    for module, names in ADAPTER_OPTIONS.items():
        mod = importlib.import_module(f"robustmer.data.{module}")
        defaults = [
            v for k, v in vars(mod).items() if k.endswith("_DEFAULTS") and isinstance(v, dict)
        ]
        for found in defaults:  # raw adapters and feature tables reject unknown keys themselves
            assert set(found) - {"dataset"} == names, module


def test_extractor_classes_take_their_options_from_the_registry() -> None:
    for kind, info in KINDS.items():
        assert extractor_class(kind).defaults == dict(info.options), kind


def test_every_key_acquire_reads_is_an_acquisition_key() -> None:
    from robustmer.data import acquire

    _, acquisition = option_names("emodb")
    assert set(acquire._LIMIT_KEYS) <= acquisition
