"""Stage `acquire`: put the configured dataset into data/raw/<dataset>/.

- built-in corpus: generated from the seed;
- raw corpora (media + labels): the adapter checks the user's copy and writes metadata.csv
  (absolute media paths and their sha256) and corpus.json; `extract` then computes features;
- feature packs: the adapter's file list is checked and fingerprinted (size, mtime, sha256) into
  corpus.json; `extract` converts the pack into the canonical store after checking that the
  copy has not changed since.

Licensed datasets are never downloaded: the user points `acquire.<dataset>.path` (or
`robustmer acquire DATASET --from PATH`) at their copy. Public ones can be downloaded with
`acquire.<dataset>.download: true`, resumably and checked against a pinned sha256.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from robustmer.data.archive import Limits
from robustmer.data.registry import DatasetInfo, dataset_info
from robustmer.errors import ConfigError, DataError
from robustmer.io import atomic_dir, read_json, sha256_file, write_json
from robustmer.seeding import derive_seed

log = logging.getLogger(__name__)

DOWNLOADS = Path("data/downloads")
CORPUS_FILE = "corpus.json"
# `acquire.<dataset>` keys that bound archive extraction (archive.Limits), not adapter options.
_LIMIT_KEYS = {"max_archive_members": "max_members", "max_unpacked_bytes": "max_bytes"}


def acquire(params: dict[str, Any], out_dir: Path, source: Path | None = None) -> Path:
    """Acquire params["dataset"] into `out_dir` (atomically) and return `out_dir`."""
    name = params["dataset"]
    info = dataset_info(name)
    out_dir = Path(out_dir)
    if info.kind == "generated":
        from robustmer.data.builtin import generate_corpus

        generate_corpus(
            out_dir,
            params["acquire"]["builtin"],
            seed=derive_seed(params["seed"], "acquire", "builtin"),
            workers=params["extract"]["workers"],
        )
        return out_dir
    cfg = dict((params.get("acquire") or {}).get(name) or {})
    src = _source(info, cfg, source)
    adapter_cfg = {k: v for k, v in cfg.items() if k not in _LIMIT_KEYS}
    options = {**info.resolved_options(adapter_cfg), "dataset": name}  # one adapter serves several
    with atomic_dir(out_dir) as tmp:
        if info.kind == "raw":
            summary = info.adapter_fn()(src, tmp, options)
            corpus = read_json(tmp / CORPUS_FILE)
        else:
            files = info.files_fn()(src, options)
            summary = {"files": len(files)}
            corpus = {
                "dataset": name,
                "kind": "pack",
                "source": src.as_posix(),
                "files": fingerprint(src, files),
            }
        corpus.update(
            dataset=name,
            adapter=info.adapter,
            title=info.title,
            licence=info.licence,
            citation=info.citation,
            options=options,
            subset=bool(options.get("max_per_split")),
        )
        write_json(tmp / CORPUS_FILE, corpus)
    log.info("acquired %s from %s: %s", name, src, summary)
    return out_dir


def _source(info: DatasetInfo, cfg: dict[str, Any], source: Path | None) -> Path:
    """The user's copy: `--from`, else `acquire.<name>.path`, else a checked download."""
    given = source or cfg.get("path")
    if given is None and cfg.get("download"):
        return download_dataset(info, cfg)
    if given is None:
        extra = (
            f" It is public: `acquire.{info.name}.download: true` downloads it."
            if info.access == "public"
            else ""
        )
        raise DataError(
            f"dataset {info.name!r} ({info.title}; licence: {info.licence}) needs your copy: "
            f"{info.instructions}{extra} (`robustmer acquire {info.name} --from PATH` or "
            f"`acquire.{info.name}.path` in params.yaml)"
        )
    path = Path(os.path.expanduser(str(given))).resolve()
    if not path.exists():
        raise DataError(
            f"{path}: the copy of {info.name!r} given in "
            f"{'--from' if source else f'acquire.{info.name}.path'} does not exist; fix the path"
        )
    return path


def download_dataset(info: DatasetInfo, cfg: dict[str, Any]) -> Path:
    """Download (resumable, sha256-checked) and safely unpack a public dataset once.

    Both copies are keyed by content, so a changed URL or sha256 can never reuse a stale one:
    the archive lives under `archives/<pinned sha256>/` (or `archives/url-<hash of the URL>/`
    when nothing is pinned) and is unpacked into `unpacked/<the archive's sha256>/`. An unchanged
    URL and digest reuse both without any network access.
    """
    from robustmer.data.archive import safe_extract
    from robustmer.data.download import download, normalise_sha256

    url = cfg.get("url") or info.url
    if not url:
        raise DataError(f"dataset {info.name!r} has no public URL; see its instructions")
    key = f"acquire.{info.name}"
    folder = DOWNLOADS / info.name
    pinned = normalise_sha256(cfg.get("sha256") or info.sha256, url)
    slot = pinned or "url-" + hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    archive = folder / "archives" / slot / url.rstrip("/").rsplit("/", 1)[-1]
    download(
        url,
        archive,
        pinned,
        allow_unverified=bool(cfg.get("allow_unverified")),
        params_key=key,
    )
    digest = pinned or sha256_file(archive)  # download() verified a pinned digest already
    target = folder / "unpacked" / digest
    if not target.exists():
        safe_extract(archive, target, _limits(cfg, key))
    if (folder / "extracted").exists():
        log.info(
            "%s is left from an older version that did not key unpacked copies by digest; "
            "nothing reads it any more, delete it to free the space",
            folder / "extracted",
        )
    return target.resolve()


def _limits(cfg: dict[str, Any], key: str) -> Limits:
    """Extraction limits: the defaults, or `max_archive_members` / `max_unpacked_bytes`."""
    values = {}
    for name, field in _LIMIT_KEYS.items():
        value = cfg.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}.{name} must be a positive integer, got {value!r}")
        values[field] = value
    return Limits(params_key=key, **values)


def fingerprint(root: Path, files: list[Path]) -> dict[str, dict[str, Any]]:
    """Size, mtime and sha256 of each pack file, keyed by its path relative to `root`."""
    out = {}
    base = root if root.is_dir() else root.parent
    for path in sorted(files):
        stat = path.stat()
        out[path.relative_to(base).as_posix()] = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": sha256_file(path),
        }
    return out


def check_unchanged(corpus: dict[str, Any]) -> Path:
    """The pack's source, after checking that its files are the ones fingerprinted at acquire.

    Size and mtime are compared (cheap); a file whose size or time differs is re-hashed, so a
    copy that was only touched still passes while changed content is refused.
    """
    source = Path(corpus["source"])
    base = source if source.is_dir() else source.parent
    for rel, fp in corpus["files"].items():
        path = base / rel
        if not path.is_file():
            raise DataError(
                f"{path}: listed when {corpus['dataset']!r} was acquired but now missing; "
                "restore it or re-run `robustmer acquire`"
            )
        stat = path.stat()
        if (stat.st_size, stat.st_mtime_ns) != (fp["size"], fp["mtime_ns"]) and sha256_file(
            path
        ) != fp["sha256"]:
            raise DataError(
                f"{path}: changed since {corpus['dataset']!r} was acquired (sha256 differs); "
                "re-run `robustmer acquire` (or `dvc repro -f acquire`) to record the new copy"
            )
    return source
