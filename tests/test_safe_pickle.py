"""load_pickle: MMSA-style feature pickles load; pickles naming other callables never run them."""

from __future__ import annotations

import _compat_pickle
import builtins
import collections
import io
import os
import pickle
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from robustmer.data.safe_pickle import DEFAULT_ALLOWED, load_pickle
from robustmer.errors import DataError

PROTOCOLS = (2, 4, 5)


def _mmsa_like() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    split = {
        "id": np.array(["03bSnISJMiM$_$1", "03bSnISJMiM$_$2", "0h-zjBukYpk$_$3"], dtype=object),
        "audio": rng.standard_normal((3, 50, 5)).astype(np.float32),
        "vision": rng.standard_normal((3, 50, 20)).astype(np.float32),
        "text_bert": rng.integers(0, 30000, (3, 3, 50)).astype(np.int64),
        "raw_text": ["it was great", "meh", "terrible ending"],
        "raw_text_arr": np.array(["it was great", "meh", "terrible ending"]),
        "regression_labels": np.array([2.4, 0.0, -1.8]),
        "audio_lengths": [50, 12, 33],
        "annotations": np.array(["Positive", "Neutral", "Negative"], dtype=object),
    }
    extras = {
        "scalars": (np.float32(1.5), np.int64(7), np.float64(-2.0), True, None, 3 + 4j),
        "containers": ({1, 2}, frozenset({"a"}), b"\x00\xffraw", bytearray(b"ba"), range(3)),
        "slice": slice(1, 5, 2),
        "ordered": collections.OrderedDict(a=1),
    }
    return {"train": split, "valid": split, "test": split, "extras": extras}


def _assert_same(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert type(b) is type(a) and a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        assert a.tolist() == b.tolist()
    elif isinstance(a, np.generic):
        assert type(b) is type(a) and a == b
    elif isinstance(a, list | tuple):
        assert type(b) is type(a) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert type(b) is type(a) and a == b


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mmsa_style_pickle_round_trips(tmp_path: Path, protocol: int) -> None:
    data = _mmsa_like()
    path = tmp_path / "aligned_50.pkl"
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=protocol)
    loaded = load_pickle(path)
    _assert_same(data, loaded)
    assert loaded["train"]["id"].dtype == object
    assert isinstance(loaded["train"]["id"][0], str)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_object_str_array_needs_only_builtins(tmp_path: Path, protocol: int) -> None:
    array = np.array(["a", "bb", "ccc"], dtype=object)
    blob = pickle.dumps(array, protocol=protocol)
    names = set(_global_names(blob))
    assert names <= DEFAULT_ALLOWED
    assert {m for m, _ in names} - {"builtins", "_codecs"} <= {
        "numpy",
        "numpy._core.multiarray",
        "numpy._core.numeric",
    }
    path = tmp_path / "ids.pkl"
    path.write_bytes(blob)
    assert load_pickle(path).tolist() == ["a", "bb", "ccc"]


@pytest.fixture
def numpy1_names(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the pure-Python pickler write numpy.core.* names, as numpy 1.x does."""
    real = pickle.whichmodule

    def whichmodule(obj: Any, name: str) -> str:
        module = real(obj, name)
        return module.replace("numpy._core", "numpy.core", 1)

    monkeypatch.setattr(pickle, "whichmodule", whichmodule)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 warns on numpy.core
        yield


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_numpy1_module_names_load(tmp_path: Path, protocol: int, numpy1_names: None) -> None:
    data = {
        "f": np.arange(6, dtype=np.float32).reshape(2, 3),
        "i": np.arange(4, dtype=np.int64),
        "o": np.array(["x", "y"], dtype=object),
        "s": np.float32(2.5),
    }
    path = tmp_path / "np1.pkl"
    with open(path, "wb") as fh:
        pickle._Pickler(fh, protocol=protocol).dump(data)  # type: ignore[attr-defined]
    modules = {m for m, _ in _global_names(path.read_bytes())}
    assert "numpy.core.multiarray" in modules and "numpy._core.multiarray" not in modules
    _assert_same(data, load_pickle(path))


class _Evil:
    """Stands for an arbitrary class a hostile pickle could name."""

    def __init__(self, marker: str) -> None:
        Path(marker).write_text("ran")


class _SubArray(np.ndarray):
    """An ndarray subclass: loading it would run the subclass's code."""


def _payloads(marker: Path) -> dict[str, tuple[Any, str]]:
    """name -> (object whose pickle calls something, the name the refusal must mention)."""

    def reduce_to(func: Any, *args: Any) -> Any:
        return type("R", (), {"__reduce__": lambda self: (func, args)})()

    return {
        "os.system": (reduce_to(os.system, f"touch {marker}"), "system"),
        "subprocess.Popen": (reduce_to(subprocess.Popen, ["touch", str(marker)]), "Popen"),
        "custom class": (reduce_to(_Evil, str(marker)), "_Evil"),
        "numpy.save": (reduce_to(np.save, str(marker), np.zeros(1)), "numpy.save"),
        "numpy.load": (reduce_to(np.load, str(marker)), "numpy.load"),
        "builtins.open": (reduce_to(builtins.open, str(marker), "w"), "io.open"),
        "builtins.eval": (reduce_to(builtins.eval, f"open({str(marker)!r}, 'w')"), "eval"),
        "nested in data": ({"train": {"audio": reduce_to(os.system, f"touch {marker}")}}, "system"),
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "case",
    [
        "os.system",
        "subprocess.Popen",
        "custom class",
        "numpy.save",
        "numpy.load",
        "builtins.open",
        "builtins.eval",
        "nested in data",
    ],
)
def test_hostile_pickle_is_refused_before_running(tmp_path: Path, case: str, protocol: int) -> None:
    marker = tmp_path / "marker"
    obj, name = _payloads(marker)[case]
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    with pytest.raises(DataError, match="pickles can run code") as err:
        load_pickle(path)
    message = str(err.value)
    assert str(path) in message and name in message and ".npz" in message
    assert not marker.exists()


def test_allowed_constructor_cannot_smuggle_a_class(tmp_path: Path) -> None:
    """numpy's _reconstruct takes the array class as an argument; that class is checked too."""
    path = tmp_path / "sub.pkl"
    path.write_bytes(pickle.dumps(np.zeros(3).view(_SubArray), protocol=4))
    with pytest.raises(DataError, match=r"\._SubArray"):
        load_pickle(path)


def test_codecs_encode_only_decodes_latin1(tmp_path: Path) -> None:
    good = pickle.dumps(b"\x00\xff", protocol=2)
    assert b"_codecs\nencode" in good
    path = tmp_path / "codec.pkl"
    path.write_bytes(good.replace(b"latin1", b"rot_13"))
    with pytest.raises(DataError, match=r"rot_13.*refusing to load"):
        load_pickle(path)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_truncated_pickle_names_the_file(tmp_path: Path, protocol: int) -> None:
    blob = pickle.dumps(_mmsa_like(), protocol=protocol)
    path = tmp_path / "cut.pkl"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="truncated or not a valid pickle") as err:
        load_pickle(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", b"\x80\x05garbage"])
def test_empty_or_garbage_file_is_a_data_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pkl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=str(path)):
        load_pickle(path)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_pickle(tmp_path / "absent.pkl")


def test_custom_allow_list_replaces_the_default(tmp_path: Path) -> None:
    path = tmp_path / "counter.pkl"
    path.write_bytes(pickle.dumps({"c": collections.Counter("aab")}, protocol=4))
    with pytest.raises(DataError, match=r"collections\.Counter"):
        load_pickle(path)
    loaded = load_pickle(path, DEFAULT_ALLOWED | {("collections", "Counter")})
    assert loaded == {"c": collections.Counter("aab")}

    arrays = tmp_path / "arrays.pkl"
    arrays.write_bytes(pickle.dumps(np.zeros(2), protocol=4))
    with pytest.raises(DataError, match="numpy"):
        load_pickle(arrays, frozenset())


def _global_names(blob: bytes) -> list[tuple[str, str]]:
    """(module, name) pairs a pickle looks up, in Python 3 spelling, recorded while loading it."""
    names: list[tuple[str, str]] = []

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            names.append((_compat_pickle.IMPORT_MAPPING.get(module, module), name))
            return super().find_class(module, name)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        Recorder(io.BytesIO(blob)).load()
    return names
