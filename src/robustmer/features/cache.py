"""Per-item feature cache: what `extract` already computed, keyed by content, not by path.

Layout under the cache root (default data/cache/features/, git-ignored and not a DVC output, so
`dvc repro` removing the store keeps it):

    media_index.json                  abs path -> [size, mtime_ns, sha256] of media seen before
    <modality>/<kind>-<entry key>/    one folder per extractor configuration
        entry.json                    its cache_key() and the OutputSpecs it declared (per
                                      corpus-dependent variant, e.g. the clips' frame rate)
        <h[:2]>/<h>.npz               one item: one float32 array per output suffix

The entry key is the sha256 of the extractor's `cache_key()` (kind, options, library and model
versions), so changing one option of one entry invalidates that entry only; renaming an entry
does not. `h` is the sha256 of the media file's bytes or of the transcript, so a file moved or
listed twice is extracted once, and a changed file is extracted again. Every file is written
atomically; an entry that cannot be read back (a crash mid-write on a filesystem without atomic
rename, a disk error) counts as a miss and is rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from robustmer.features.base import Extractor, OutputSpec
from robustmer.io import atomic_path, read_json, sha256_file, write_json

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the file layout or the meaning of an entry changes
DEFAULT_ROOT = Path("data/cache/features")
ENV_ROOT = "ROBUSTMER_FEATURE_CACHE"  # overrides extract.cache_dir (tests, shared scratch)
INDEX_FILE = "media_index.json"
_STATS_KEY = "__stats__"


def cache_root(cfg: dict[str, Any]) -> Path | None:
    """The cache folder of the `extract` section, or None when `extract.cache` is off."""
    if not cfg.get("cache", True):
        return None
    return Path(os.environ.get(ENV_ROOT) or cfg.get("cache_dir") or DEFAULT_ROOT)


def text_hash(text: str) -> str:
    return hashlib.sha256(b"text\0" + text.encode("utf-8")).hexdigest()


def entry_key(ext: Extractor) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, **ext.cache_key()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _array_key(suffix: str) -> str:
    return f"o{suffix}"  # npz member names cannot be empty ("" is the main output's suffix)


class MediaIndex:
    """sha256 of media files, remembered by (size, mtime) so a rerun reads no media twice.

    A hash the corpus recorded at acquire time (metadata.csv `<modality>_sha256`, the built-in
    corpus.json `sha256`) is trusted when the file has not been modified since that record was
    written; otherwise, and for files never seen, the file is hashed.
    """

    def __init__(self, root: Path | None):
        self.path = None if root is None else root / INDEX_FILE
        self._known: dict[str, list[Any]] = self._read()
        self._new: dict[str, list[Any]] = {}

    def _read(self) -> dict[str, list[Any]]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            data = read_json(self.path)
        except (OSError, ValueError):
            return {}  # a damaged index only costs re-hashing
        return data if isinstance(data, dict) else {}

    def hashes(
        self, paths: Sequence[Path], recorded: dict[str, tuple[str, int]] | None = None
    ) -> list[str]:
        """sha256 per path; `recorded`: abs posix path -> (sha256, mtime_ns of the record file)."""
        recorded = recorded or {}
        out: list[str | None] = []
        todo: list[int] = []
        stats: list[tuple[str, int, int]] = []
        for i, path in enumerate(paths):
            key = Path(path).absolute().as_posix()
            st = os.stat(path)
            stats.append((key, st.st_size, st.st_mtime_ns))
            known = self._new.get(key) or self._known.get(key)
            if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
                out.append(str(known[2]))
            elif key in recorded and st.st_mtime_ns <= recorded[key][1]:
                out.append(recorded[key][0])
            else:
                out.append(None)
                todo.append(i)
        if todo:
            workers = max(1, min(8, os.cpu_count() or 1, len(todo)))
            with ThreadPoolExecutor(workers) as pool:  # overlaps disk reads of large corpora
                digests = pool.map(sha256_file, [paths[i] for i in todo])
                for i, digest in zip(todo, digests, strict=True):
                    out[i] = digest
        for (key, size, mtime), digest in zip(stats, out, strict=True):
            if self._known.get(key) != [size, mtime, digest]:
                self._new[key] = [size, mtime, digest]
        return [str(d) for d in out]

    def save(self) -> None:
        """Merge the new hashes into the index file (other runs may have added theirs)."""
        if self.path is None or not self._new:
            return
        merged = {**self._read(), **self._new}
        write_json(self.path, merged)
        self._known, self._new = merged, {}


class CacheEntry:
    """The cached items of one extractor configuration (no files at all when root is None)."""

    def __init__(self, root: Path | None, modality: str, ext: Extractor):
        self.key = entry_key(ext)
        self.dir = None if root is None else root / modality / f"{ext.kind}-{self.key[:32]}"
        self._cache_key = ext.cache_key()

    def _item_path(self, item_hash: str) -> Path:
        assert self.dir is not None
        return self.dir / item_hash[:2] / f"{item_hash}.npz"

    def _read_entry(self) -> dict[str, Any]:
        if self.dir is None or not (self.dir / "entry.json").is_file():
            return {}
        try:
            data = read_json(self.dir / "entry.json")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def specs(self, variant: str = "") -> list[OutputSpec] | None:
        """The outputs an earlier run declared, so a run with nothing to extract loads no model.

        `variant` tells apart declarations that depend on the corpus rather than on the cache
        key (the frame rate a video extractor reads from the clips); None when unknown.
        """
        try:
            outputs = self._read_entry()["outputs"][variant]
            return [OutputSpec(**o) for o in outputs]
        except (KeyError, TypeError):
            return None

    def save_specs(self, specs: list[OutputSpec], variant: str = "") -> None:
        if self.dir is None:
            return
        outputs = self._read_entry().get("outputs")
        outputs = outputs if isinstance(outputs, dict) else {}
        outputs[variant] = [asdict(s) for s in specs]
        payload = {"cache_key": self._cache_key, "outputs": outputs}
        write_json(self.dir / "entry.json", json.loads(json.dumps(payload, default=str)))

    def load(
        self, item_hash: str, specs: list[OutputSpec]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The item's arrays and stats, or None on a miss (absent, unreadable or malformed)."""
        if self.dir is None:
            return None
        path = self._item_path(item_hash)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {s.suffix: np.asarray(npz[_array_key(s.suffix)]) for s in specs}
                stats = json.loads(str(npz[_STATS_KEY])) if _STATS_KEY in npz.files else {}
        except Exception as exc:  # zip, CRC, header or key errors: all mean "not usable"
            log.warning("cache entry %s is unreadable (%s); extracting the item again", path, exc)
            return None
        for spec in specs:
            arr = arrays[spec.suffix]
            if (
                arr.dtype != np.float32
                or arr.ndim != 2
                or arr.shape[1] != spec.dim
                or arr.shape[0] < 1
                or (spec.level == "utterance" and arr.shape[0] != 1)
            ):
                log.warning("cache entry %s has a malformed %r array; re-extracting", path, spec)
                return None
        return arrays, stats

    def store(self, item_hash: str, arrays: dict[str, np.ndarray], stats: dict[str, Any]) -> None:
        if self.dir is None:
            return
        members = {_array_key(k): np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
        members[_STATS_KEY] = np.asarray(json.dumps(stats, sort_keys=True))
        with atomic_path(self._item_path(item_hash), suffix=".npz") as tmp:
            np.savez(tmp, **members)  # type: ignore[arg-type]
