"""Load third-party feature pickles (MMSA, MMIN packs) without letting them run code.

Unpickling calls whatever callables a pickle names, so a crafted file can run `os.system` the
moment it is loaded. Feature packs only need containers, numbers, strings and numpy arrays, so the
unpickler resolves exactly those names and refuses everything else before it is ever called.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import io
import pickle
import struct
from pathlib import Path
from typing import Any

from robustmer.errors import DataError

_BUILTINS = (
    "dict",
    "list",
    "tuple",
    "set",
    "frozenset",
    "str",
    "bytes",
    "bytearray",
    "int",
    "float",
    "complex",
    "bool",
    "slice",
    "range",
    "NoneType",
)
# numpy 1.x pickles name numpy.core.*, numpy 2.x pickles name numpy._core.*; both must load.
_NUMPY = (
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
)

DEFAULT_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {("builtins", name) for name in _BUILTINS}
    | set(_NUMPY)
    | {("_codecs", "encode"), ("collections", "OrderedDict")}
)
"""(module, name) pairs a feature pickle may reference; protocol-2 bytes need `_codecs.encode`."""

_LATIN1_NAMES = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"})

# Exceptions a truncated or corrupt stream raises from inside the unpickler (including from the
# allowed constructors when they are fed garbage arguments).
_CORRUPT = (
    EOFError,
    pickle.UnpicklingError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    struct.error,
)


def load_pickle(path: Path, allowed: frozenset[tuple[str, str]] | None = None) -> Any:
    """Unpickle `path`, resolving only the (module, name) pairs in `allowed`.

    `allowed` defaults to DEFAULT_ALLOWED (builtins containers and scalars plus numpy arrays and
    scalars as numpy 1.x and 2.x write them); pass a superset to admit more, knowingly.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found")
    with open(path, "rb") as fh:
        unpickler = _RestrictedUnpickler(fh, path, DEFAULT_ALLOWED if allowed is None else allowed)
        try:
            return unpickler.load()
        except DataError:
            raise
        except _Refused as exc:
            raise DataError(
                f"{path}: {exc}; refusing to load it (pickles can run code). If you trust this "
                "file, convert it to .npz yourself"
            ) from exc
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}: the pickle holds byte strings that are not ASCII text ({exc}); it was "
                "probably written by Python 2. Re-save it with Python 3 or convert it to .npz"
            ) from exc
        except _CORRUPT as exc:
            raise DataError(
                f"{path} is truncated or not a valid pickle ({type(exc).__name__}: {exc}); "
                "download or copy it again"
            ) from exc


class _Refused(Exception):
    """An allowed callable was asked to do more than plain data needs."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose global lookups go through an allow-list instead of importing freely."""

    def __init__(self, file: io.BufferedReader, path: Path, allowed: frozenset[tuple[str, str]]):
        super().__init__(file)
        self._path = path
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        module, name = _python3_name(module, name)
        if (module, name) not in self._allowed:
            raise DataError(
                f"{self._path}: the pickle references {module}.{name}, which is not a plain "
                "numpy/builtin type; refusing to load it (pickles can run code). If you trust "
                "this file, convert it to .npz yourself (load it with pickle in a separate "
                "Python session and save the arrays with numpy.savez) and point the adapter at "
                "that"
            )
        return _resolve(module, name)


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Protocol 0-2 pickles use Python 2 names (`__builtin__.complex`); map them as pickle does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _resolve(module: str, name: str) -> Any:
    """The object for an allowed name, without touching numpy's deprecated `numpy.core` alias."""
    if (module, name) == ("builtins", "NoneType"):
        return type(None)
    if (module, name) == ("_codecs", "encode"):
        return _latin1_encode
    if module.startswith("numpy.core.") or module.startswith("numpy._core."):
        return _numpy_core(module.split(".", 2)[2], name)
    return getattr(importlib.import_module(module), name)


def _numpy_core(submodule: str, name: str) -> Any:
    """Look `name` up in numpy's private core package, whichever numpy major is installed."""
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {submodule}.{name}")


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """Protocol-2 pickles store bytes as `_codecs.encode(text, 'latin1')`; allow only that."""
    if encoding.lower().replace("_", "-") not in _LATIN1_NAMES:
        raise _Refused(f"the pickle calls _codecs.encode with encoding {encoding!r}, not latin1")
    return text.encode("latin1", errors)
