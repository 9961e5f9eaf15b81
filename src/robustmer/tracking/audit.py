"""`robustmer lineage`: trace a run, a model or a result back to its inputs and re-check them.

Every stage records a piece of provenance: MLflow runs carry the commit, params and the hash of
the features they read (tracking/lineage.py); `train_summary.json` the run ids and checkpoint
sha256; `store.json` the manifest and feature hashes and the raw corpus it came from;
`corpus.json` / `metadata.csv` the media and pack checksums; `condition.json` the settings, seed
and the store it was generated from. A recorded hash is only worth something if someone checks
it, so this module follows the chain from one target and re-hashes the files on disk.

Targets: an MLflow run id (a model's parent run or one fold/seed run), a model folder or one
checkpoint (`models/<m>/seed_<s>/fold_<k>.pt`), or a results table (`results/scores/<m>/<c>.csv`,
`results/report/<ds>/results.csv`): whole, one row (`FILE.csv:N`, N the 0-based data row) or
the rows matching key=value pairs (`FILE.csv:model=m,condition=c,level=0.5,fold=all,seed=1`).

Each link gets a status:

- ok: what was recorded is what is on disk;
- altered: a file's bytes differ from the hash its own stage recorded beside it (edited or
  corrupted outside the pipeline);
- stale: the file is consistent, but it is not the version the target was made from (the store,
  model, corpus or condition was regenerated since);
- missing: the file, or the record needed to check it, is absent.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd

from robustmer import paths
from robustmer.data.store import FeatureStore, feature_hash
from robustmer.errors import DataError
from robustmer.io import read_json, sha256_file
from robustmer.tracking.lineage import commit_known, head_commit

OK, STALE, MISSING, ALTERED = "ok", "stale", "missing", "altered"
SCHEMA_VERSION = 1
# The file names training/runner.py writes; not imported from there to keep torch out of the CLI
# path of `robustmer lineage` (tests/test_lineage.py checks they agree).
MEDIA_SAMPLE = 16  # raw media files re-hashed without --deep
LISTED = 20  # per-key values and problems kept in one link before only mismatches are listed
TOLERANCE = 1e-5  # scores CSVs are written with 6 significant digits
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
ROW = re.compile(r"^(?P<path>.+\.csv):(?P<row>.+)$")


@dataclass
class Link:
    """One step of the chain: what was recorded, what is on disk now, and the verdict."""

    kind: str
    name: str
    path: str | None
    recorded: Any
    actual: Any
    status: str
    detail: str = ""
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Lineage:
    """The chain of one target; `ok` only when every link is."""

    target: dict[str, Any]
    root: str
    links: list[Link]

    @property
    def ok(self) -> bool:
        return all(link.status == OK for link in self.links)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "target": self.target,
            "root": self.root,
            "links": [asdict(link) for link in self.links],
            "ok": self.ok,
        }

    def to_text(self) -> str:
        lines = [f"lineage of {self.target['kind']} {self.target['value']} (root {self.root})"]
        for link in self.links:
            value = f"  {_short(link.recorded)}" if isinstance(link.recorded, str) else ""
            lines.append(f"  {_status_label(link.status):8} {link.kind:16} {link.name}{value}")
            if link.path:
                lines.append(f"{'':28}{link.path}")
            if link.detail:
                lines.append(f"{'':28}{link.detail}")
            if link.status != OK:
                lines.append(
                    f"{'':28}recorded {_short(link.recorded)}  actual {_short(link.actual)}"
                )
        counts: dict[str, int] = {}
        for link in self.links:
            counts[link.status] = counts.get(link.status, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        verdict = "every link checks out" if self.ok else "the chain is broken"
        lines.append(f"{len(self.links)} links: {summary}; {verdict}")
        return "\n".join(lines)


def trace(
    target: str,
    root: Path | str = ".",
    *,
    deep: bool = False,
    params: dict[str, Any] | None = None,
    media_sample: int = MEDIA_SAMPLE,
) -> Lineage:
    """The lineage of `target`, relative paths resolved against the project `root`.

    `params` (params.yaml) gives the MLflow tracking URI and the dataset where the records do
    not; `deep` re-hashes every raw media file and pack file instead of a sample / size+mtime.
    """
    ctx = Context(Path(root), params or {}, deep, media_sample)
    kind, value, links = _dispatch(ctx, target)
    return Lineage({"kind": kind, **value}, ctx.root.as_posix(), _unique(links))


# --- context: paths, MLflow ---------------------------------------------------------------------


@dataclass
class Context:
    """The project root, its params and a lazily opened MLflow client."""

    root: Path
    params: dict[str, Any]
    deep: bool = False
    media_sample: int = MEDIA_SAMPLE

    def path(self, p: str | Path) -> Path:
        p = Path(p)
        return p if p.is_absolute() else self.root / p

    def show(self, p: Path) -> str:
        """`p` relative to the root where it lies inside it."""
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return p.as_posix()

    @cached_property
    def tracking_uri(self) -> str:
        from robustmer.tracking.mlflow_run import tracking_uri

        uri = tracking_uri(self.params)
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_absolute():
            uri = f"sqlite:///{self.root / uri[len('sqlite:///') :]}"
        return uri

    @cached_property
    def client(self) -> Any | None:
        """None when the store is an absent SQLite file (opening it would create it)."""
        uri = self.tracking_uri
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
            return None
        import mlflow

        return mlflow.MlflowClient(tracking_uri=uri)

    def run(self, run_id: str | None) -> Any | None:
        if not run_id or self.client is None:
            return None
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException:
            return None

    def fold_runs(self, run: Any) -> dict[tuple[int, int], Any]:
        """The nested fold runs of a parent run, by (train seed, fold)."""
        if run is None or self.client is None:
            return {}
        children = self.client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'",
            max_results=10000,
        )
        out = {}
        for child in children:
            tags = child.data.tags
            if "robustmer.fold" in tags and "robustmer.train_seed" in tags:
                out[(int(tags["robustmer.train_seed"]), int(tags["robustmer.fold"]))] = child
        return out


# --- targets ------------------------------------------------------------------------------------


@dataclass
class Training:
    """One trained model as the target sees it: its folder, summary and MLflow runs.

    `selection` holds (seed, fold) pairs, fold None for every fold of the seed; None = all.
    """

    model: str
    stage: str
    model_dir: Path
    summary: dict[str, Any] | None
    run_id: str | None
    run: Any | None
    fold_runs: dict[tuple[int, int], Any]
    selection: set[tuple[int, int | None]] | None = None
    named_run: bool = False  # the target named the run (not found through the summary)

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.run.data.tags) if self.run is not None else {}

    def selected(self, seed: int, fold: int) -> bool:
        sel = self.selection
        return sel is None or (seed, fold) in sel or (seed, None) in sel


def _dispatch(ctx: Context, target: str) -> tuple[str, dict[str, Any], list[Link]]:
    path = ctx.path(target)
    row = ROW.match(target)
    if path.is_file() and path.suffix == ".pt":
        tr = _training_from_checkpoint(ctx, path)
        value = {"value": ctx.show(path), "model": tr.model, "run_id": tr.run_id}
        return "checkpoint", value, _model_links(ctx, tr)
    if path.is_dir():
        tr = _training_from_dir(ctx, path)
        value = {"value": ctx.show(path), "model": tr.model, "run_id": tr.run_id}
        return "model", value, _model_links(ctx, tr)
    if path.is_file() and path.suffix == ".csv":
        return "results", {"value": ctx.show(path), "row": None}, _results_links(ctx, path, None)
    if row and ctx.path(row["path"]).is_file():
        csv, pick = ctx.path(row["path"]), row["row"]
        value = {"value": target, "row": int(pick) if pick.isdigit() else pick}
        return "result_row", value, _results_links(ctx, csv, pick)
    if RUN_ID.match(target):
        tr = _training_from_run(ctx, target)
        value = {"value": target, "model": tr.model, "run_id": tr.run_id}
        return "mlflow_run", value, _model_links(ctx, tr)
    raise DataError(
        f"{target}: not an MLflow run id, a model folder, a checkpoint (.pt) or a results CSV "
        "(FILE.csv, FILE.csv:ROW or FILE.csv:key=value,...) under " + ctx.root.as_posix()
    )


def _read_summary(model_dir: Path) -> tuple[str, dict[str, Any]] | None:
    for stage, name in paths.SUMMARY_FILES.items():
        if (model_dir / name).is_file():
            return stage, read_json(model_dir / name)
    return None


def _training_from_dir(
    ctx: Context, model_dir: Path, selection: set[tuple[int, int | None]] | None = None
) -> Training:
    found = _read_summary(model_dir)
    if found is None:
        raise DataError(
            f"{model_dir}: no {' or '.join(paths.SUMMARY_FILES.values())}, so not a trained model "
            "folder; run `robustmer train` first"
        )
    stage, summary = found
    if summary.get("pretraining") == "none":
        raise DataError(f"{model_dir}: {summary.get('model')} has no pretraining to trace")
    if summary.get("skipped"):
        raise DataError(f"{model_dir}: {summary.get('model')} was skipped, not trained, so there "
                        f"is nothing to trace: {summary['skipped']}")  # fmt: skip
    run_id = summary.get("mlflow_run_id")
    run = ctx.run(run_id)
    model = str(summary.get("model", model_dir.name))
    return Training(model, stage, model_dir, summary, run_id, run, ctx.fold_runs(run), selection)


def _training_from_checkpoint(ctx: Context, path: Path) -> Training:
    seed = re.fullmatch(r"seed_(\d+)", path.parent.name)
    fold = re.fullmatch(r"fold_(\d+)", path.stem)
    if not (seed and fold):
        raise DataError(f"{path}: not a checkpoint laid out as seed_<s>/fold_<k>.pt")
    return _training_from_dir(ctx, path.parent.parent, {(int(seed[1]), int(fold[1]))})


def _training_from_run(ctx: Context, run_id: str) -> Training:
    run = ctx.run(run_id)
    if run is None:
        raise DataError(
            f"MLflow run {run_id} not found at {_redact(ctx.tracking_uri)}; set "
            "MLFLOW_TRACKING_URI (or mlflow.tracking_uri) to the store it was logged to"
        )
    tags = run.data.tags
    selection = None
    if parent_id := tags.get("mlflow.parentRunId"):
        if not {"robustmer.train_seed", "robustmer.fold"} <= set(tags):
            raise DataError(f"MLflow run {run_id} is a nested run but not a fold/seed run")
        selection = {(int(tags["robustmer.train_seed"]), int(tags["robustmer.fold"]))}
        run = ctx.run(parent_id)
        if run is None:
            raise DataError(f"MLflow run {run_id}: its parent run {parent_id} is gone")
        tags = run.data.tags
    model, stage = tags.get("robustmer.model"), _stage(tags)
    if not model or stage is None:
        raise DataError(
            f"MLflow run {run_id} is not a robustmer training run (an evaluation or report "
            "run?); trace its model folder or a results row instead"
        )
    if "robustmer.model_dir" in tags:
        model_dir = ctx.path(tags["robustmer.model_dir"])
    else:
        dataset = _dataset(ctx, tags)
        if dataset is None:
            raise DataError(f"MLflow run {run_id} names no model folder or dataset; trace the "
                            "model folder instead")  # fmt: skip
        folder = paths.model_dir if stage == "train" else paths.pretrain_dir
        model_dir = ctx.path(folder(dataset, model))
    summary_file = model_dir / paths.SUMMARY_FILES[stage]
    summary = read_json(summary_file) if summary_file.is_file() else None
    folds = ctx.fold_runs(run)
    return Training(model, stage, model_dir, summary, run.info.run_id, run, folds, selection, True)


def _stage(tags: dict[str, str]) -> str | None:
    """train/pretrain, as the training run tagged itself (None for other runs)."""
    stage = tags.get("robustmer.stage")
    return stage if stage in paths.SUMMARY_FILES else None


# --- links of a trained model -------------------------------------------------------------------


def _model_links(ctx: Context, tr: Training) -> list[Link]:
    return [*_run_links(ctx, tr), *_checkpoint_links(ctx, tr), *_store_links_of(ctx, tr)]


def _run_links(ctx: Context, tr: Training) -> list[Link]:
    """The MLflow run, the code and params it records, and both directions of the DVC link."""
    links = [_mlflow_link(ctx, tr)]
    if tr.run is not None:
        links += [_git_link(ctx, tr.tags), _params_link(tr.run)]
        if tr.tags.get("robustmer.dvc_exp_name"):
            links.append(_dvc_exp_link(tr.tags))
    if tr.named_run:
        at = ("train_summary", tr.model, ctx.show(tr.model_dir / paths.SUMMARY_FILES[tr.stage]))
        actual = (tr.summary or {}).get("mlflow_run_id")
        status = _verdict(tr.run_id, actual, STALE)
        detail = (
            "retrained since this run: the summary names a newer run" if status == STALE else ""
        )
        links.append(Link(*at, tr.run_id, actual, status, detail))
    path = paths.run_record_path(tr.model_dir)
    record = read_json(path) if path.is_file() else {}
    actual = record.get("mlflow_run_id")
    info = {"mlflow_experiment_id": record.get("mlflow_experiment_id")}
    at = ("dvc_run_record", tr.model, ctx.show(path))
    links.append(Link(*at, tr.run_id, actual, _verdict(tr.run_id, actual, STALE), "", info))
    return links


def _mlflow_link(ctx: Context, tr: Training) -> Link:
    uri = _redact(ctx.tracking_uri)
    if tr.run is None:
        why = "no run id recorded" if not tr.run_id else f"run not found at {uri}"
        detail = f"{why}: commit, params and tags cannot be traced"
        return Link("mlflow_run", tr.model, uri, tr.run_id, None, MISSING, detail)
    info = tr.run.info
    folds = {f"seed_{s}/fold_{k}": r.info.run_id for (s, k), r in sorted(tr.fold_runs.items())}
    detail = f"{tr.stage} run, {info.status}, {len(folds)} fold/seed runs"
    extra = {"experiment_id": info.experiment_id, "status": info.status, "fold_runs": folds}
    return Link("mlflow_run", info.run_name or tr.model, uri, tr.run_id, info.run_id, OK, detail,
                extra)  # fmt: skip


def _git_link(ctx: Context, tags: dict[str, str]) -> Link:
    commit = tags.get("robustmer.git_commit") or tags.get("mlflow.source.git.commit")
    dirty = tags.get("robustmer.git_dirty", "unknown")
    info = {"dirty": dirty, "robustmer_version": tags.get("robustmer.version")}
    at = ("git_commit", "code", None)
    if not commit or commit == "unknown":
        return Link(*at, commit, None, MISSING, "the run was not made in a git repository", info)
    head, known = head_commit(ctx.root), commit_known(commit, ctx.root)
    if known is False:
        return Link(*at, commit, head, MISSING, "this repository lacks the commit (fetch?)", info)
    notes = ["uncommitted code/params changes at run time" if dirty == "true" else "clean tree"]
    if known is None:
        notes.append("not verified: the root is not in a git repository")
    return Link(*at, commit, head, OK, "; ".join(notes), info)


def _params_link(run: Any) -> Link:
    params = dict(run.data.params)
    return Link("params", "run params", None, params, None, OK, f"{len(params)} params logged")


def _dvc_exp_link(tags: dict[str, str]) -> Link:
    name = tags["robustmer.dvc_exp_name"]
    recorded = {"name": name, "baseline_rev": tags.get("robustmer.dvc_exp_baseline_rev")}
    info = {"dvc_lock_sha256": tags.get("robustmer.dvc_lock_sha256")}
    detail = "made by `dvc exp run`; `dvc exp show` lists it"
    return Link("dvc_experiment", name, None, recorded, None, OK, detail, info)


def _checkpoint_links(ctx: Context, tr: Training) -> list[Link]:
    """Each selected checkpoint against the sha256 of its run and of the summary on disk."""
    on_disk = {
        (int(f["train_seed"]), int(f["fold"])): f for f in (tr.summary or {}).get("folds", [])
    }
    links = []
    for seed, fold in sorted(tr.fold_runs) if tr.run is not None else sorted(on_disk):
        if not tr.selected(seed, fold):
            continue
        entry, run = on_disk.get((seed, fold), {}), tr.fold_runs.get((seed, fold))
        ran = run.data.tags.get("robustmer.checkpoint_sha256") if run is not None else None
        path = tr.model_dir / entry.get("checkpoint", f"seed_{seed}/fold_{fold}.pt")
        info = {"mlflow_run_id": run.info.run_id if run is not None else entry.get("mlflow_run_id")}
        at = ("checkpoint", f"seed {seed} fold {fold}", ctx.show(path))
        links.append(_checkpoint_link(at, path, ran, entry.get("checkpoint_sha256"), info))
    if not links:
        wanted = sorted(tr.selection or [], key=str)
        at = ("checkpoint", tr.model, ctx.show(tr.model_dir))
        links.append(Link(*at, wanted, None, MISSING, "no recorded checkpoint matches"))
    return links


def _checkpoint_link(
    at: tuple[str, str, str], path: Path, ran: str | None, disk: str | None, info: dict[str, Any]
) -> Link:
    """ran: the sha256 the fold run recorded; disk: the one in the summary beside the file."""
    recorded = ran or disk
    if not path.is_file():
        return Link(*at, recorded, None, MISSING, "", info)
    if recorded is None:
        detail = "no sha256 recorded (trained before robustmer recorded checkpoint hashes)"
        return Link(*at, None, None, MISSING, detail, info)
    actual = sha256_file(path)
    if actual == recorded:
        return Link(*at, recorded, actual, OK, "", info)
    if actual == disk:
        return Link(*at, recorded, actual, STALE, "retrained since this run", info)
    return Link(*at, recorded, actual, ALTERED, "differs from every recorded sha256", info)


# --- store, features, corpus --------------------------------------------------------------------


def _dataset(ctx: Context, tags: dict[str, str]) -> str | None:
    return tags.get("robustmer.dataset") or ctx.params.get("dataset")


def _store_links_of(ctx: Context, tr: Training) -> list[Link]:
    """The store the run read (its recorded path, else the dataset's), as the run recorded it."""
    tags, summary = tr.tags, tr.summary or {}
    dataset = _dataset(ctx, tags)
    where = tags.get("robustmer.store_path") or (dataset and paths.feature_dir(dataset))
    names = tags.get("robustmer.features")
    features = names.split(",") if names else list(summary.get("features", []))
    recorded = tags.get("robustmer.features_hash") or summary.get("features_hash")
    if not where:
        detail = "neither the run nor params.yaml names the dataset"
        return [Link("feature_store", "?", None, recorded, None, MISSING, detail)]
    return store_links(ctx, ctx.path(where), features, recorded)


def store_links(
    ctx: Context, store_dir: Path, features: list[str], recorded: str | None
) -> list[Link]:
    """The store as a whole (against the hash a run recorded), manifest, features, raw corpus."""
    if not (store_dir / "store.json").is_file():
        at = ("feature_store", store_dir.name, ctx.show(store_dir))
        return [Link(*at, recorded, None, MISSING, "no store.json; run `robustmer extract`")]
    store = FeatureStore(store_dir)
    gone = [name for name in features if name not in store.info["features"]]
    actual = None if gone else store.content_hash(features)
    status = _verdict(recorded, actual, STALE)
    detail = f"no longer in the store: {', '.join(gone)}" if gone else ""
    if status == STALE:
        detail = "rebuilt since the run (manifest or feature hashes differ)"
    info = {"features": sorted(features), "n_samples": len(store), "classes": store.classes}
    at = ("feature_store", store.dataset, ctx.show(store_dir))
    links = [Link(*at, recorded, actual, status, detail, info)]
    manifest = store_dir / "manifest.parquet"
    recorded_sha = store.info.get("manifest_sha256")
    actual_sha = sha256_file(manifest) if manifest.is_file() else None
    at = ("manifest", store.dataset, ctx.show(manifest))
    links.append(Link(*at, recorded_sha, actual_sha, _verdict(recorded_sha, actual_sha, ALTERED)))
    links += [feature_link(ctx, store, name) for name in sorted(features) if name not in gone]
    return links + corpus_links(ctx, store.info)


def feature_link(ctx: Context, store: FeatureStore, name: str, kind: str = "feature") -> Link:
    """Recompute a feature's hash (values + offsets) as the store writer did and compare."""
    base = store.root / "features" / name
    values, offsets, meta_path = (
        base.parent / f"{base.name}{suffix}" for suffix in (".values.npy", ".offsets.npy", ".json")
    )
    meta = read_json(meta_path) if meta_path.is_file() else {}
    info = {k: meta.get(k) for k in ("extractor", "version", "params", "level", "dim")}
    detail = f"extractor {meta.get('extractor')} {meta.get('version') or ''}".rstrip()
    recorded, at = store.info["features"].get(name), (kind, name, ctx.show(values))
    if not (values.is_file() and offsets.is_file()):
        return Link(*at, recorded, None, MISSING, detail, info)
    try:
        actual = feature_hash(np.load(values, mmap_mode="r"), np.load(offsets))
    except (ValueError, OSError) as exc:
        return Link(*at, recorded, None, ALTERED, f"unreadable ({exc})", info)
    return Link(*at, recorded, actual, _verdict(recorded, actual, ALTERED), detail, info)


def corpus_links(ctx: Context, store_info: dict[str, Any]) -> list[Link]:
    """The raw corpus the store was extracted from, its pack files and media checksums."""
    raw = store_info.get("raw_corpus")
    if not raw:
        detail = "store.json records no raw corpus (not built by `robustmer extract`)"
        return [Link("corpus", str(store_info.get("dataset")), None, None, None, MISSING, detail)]
    raw_dir = ctx.path(raw["path"])
    corpus_file = raw_dir / "corpus.json"
    recorded = dict(raw.get("info") or {})
    current = read_json(corpus_file) if corpus_file.is_file() else None
    compared = current
    if current is not None and "files" not in recorded:  # packs: the store keeps no file list
        compared = {k: v for k, v in current.items() if k != "files"}
    before, now = _digest(recorded), None if compared is None else _digest(compared)
    status = _verdict(before, now, STALE)
    source = recorded.get("source") or recorded.get("generator") or "?"
    detail = f"source {source}" if status != STALE else "corpus.json changed since extraction"
    keys = ("dataset", "kind", "adapter", "generator", "version", "source", "licence", "title")
    info = {k: recorded[k] for k in keys if k in recorded}
    at = ("corpus", str(recorded.get("dataset", raw_dir.name)), ctx.show(corpus_file))
    links = [Link(*at, before, now, status, detail, info)]
    if current is not None and current.get("files"):
        links += _pack_links(ctx, current)
    media = _media_link(ctx, raw_dir, current or recorded)
    return links + ([media] if media else [])


def _pack_links(ctx: Context, corpus: dict[str, Any]) -> list[Link]:
    """Pack files as `check_unchanged` does: size and mtime first, sha256 when they differ."""
    source = Path(corpus["source"])
    base = source if source.is_dir() else source.parent
    links = []
    for rel, fp in sorted(corpus["files"].items()):
        path, recorded = base / rel, fp["sha256"]
        at = ("pack_file", rel, path.as_posix())
        if not path.is_file():
            links.append(Link(*at, recorded, None, MISSING))
            continue
        stat = path.stat()
        if not ctx.deep and (stat.st_size, stat.st_mtime_ns) == (fp["size"], fp["mtime_ns"]):
            links.append(
                Link(*at, recorded, None, OK, "size and mtime as recorded (--deep hashes)")
            )
            continue
        actual = sha256_file(path)
        links.append(Link(*at, recorded, actual, _verdict(recorded, actual, ALTERED)))
    return links


def _media_entries(raw_dir: Path, corpus: dict[str, Any]) -> list[tuple[Path, str]]:
    """Media file -> recorded sha256, from corpus.json (`sha256`) and metadata.csv columns."""
    entries = {raw_dir / rel: digest for rel, digest in (corpus.get("sha256") or {}).items()}
    meta = raw_dir / "metadata.csv"
    if meta.is_file():
        frame = pd.read_csv(meta, dtype=str, keep_default_na=False)
        for column in (c for c in frame.columns if c.endswith("_sha256")):
            where = column.removesuffix("_sha256") + "_path"
            for rel, digest in zip(frame.get(where, []), frame[column], strict=False):
                if rel and digest:
                    entries[raw_dir / rel] = digest  # an absolute path stays absolute
    return sorted(entries.items())


def _media_link(ctx: Context, raw_dir: Path, corpus: dict[str, Any]) -> Link | None:
    """Re-hash an evenly spread sample of the media files (all with --deep)."""
    entries = _media_entries(raw_dir, corpus)
    total = len(entries)
    if not total:
        return None
    if not ctx.deep and total > ctx.media_sample:
        picks = np.unique(np.linspace(0, total - 1, ctx.media_sample).round().astype(int))
        entries = [entries[i] for i in picks]
    problems = [
        {"path": ctx.show(path), "status": MISSING if not path.is_file() else ALTERED}
        for path, digest in entries
        if not path.is_file() or sha256_file(path) != digest
    ]
    scope = f"all {total}" if len(entries) == total else f"a sample of {total} (--deep: all)"
    at = ("media", f"{len(entries)} of {total} files", ctx.show(raw_dir))
    actual = {"checked": len(entries), "problems": len(problems)}
    status = _worst(p["status"] for p in problems)
    return Link(*at, {"files": total}, actual, status, f"sha256 of {scope}",
                {"problems": problems[:LISTED]})  # fmt: skip


# --- results rows, conditions, evaluation -------------------------------------------------------


def _results_links(ctx: Context, csv: Path, pick: str | None) -> list[Link]:
    table = pd.read_csv(csv, dtype={"level": str, "fold": str})
    needed = {"model", "condition", "level", "fold", "seed", "metric", "value"}
    if not needed <= set(table.columns):
        raise DataError(f"{csv}: not a results/scores table (needs columns {sorted(needed)})")
    if pick is not None:
        table = _pick_rows(csv, table, pick)
    # The path says the dataset (results/<ds>/...); a cross-corpus table says it per row.
    path_ds = paths.dataset_of(csv.relative_to(ctx.root) if csv.is_relative_to(ctx.root) else csv)
    default = path_ds or ctx.params.get("dataset")
    for role in ("train_dataset", "test_dataset"):
        if role not in table.columns:
            table[role] = default
    links: list[Link] = []
    keys = ["model", "condition", "train_dataset", "test_dataset"]
    for (model, condition, train_ds, test_ds), rows in table.groupby(keys, sort=False,
                                                                     dropna=False):  # fmt: skip
        model, condition = str(model), str(condition)
        folds = zip(rows["seed"], rows["fold"], strict=True)
        # Pooled, official-test and cross-corpus ensemble rows come from every fold model.
        selection = {(int(s), int(f) if str(f).isdigit() else None) for s, f in folds}
        if not isinstance(train_ds, str):
            raise DataError(f"{csv}: not under results/<dataset>/ and params.yaml names no "
                            "dataset; pass --params with the project's params")  # fmt: skip
        model_dir = ctx.path(paths.model_dir(train_ds, model))
        if _read_summary(model_dir) is None:
            detail = (f"the model that made these rows is gone; run `robustmer train {model} "
                      f"--dataset {train_ds}`")  # fmt: skip
            at = ("train_summary", model, ctx.show(model_dir / paths.SUMMARY_FILES["train"]))
            links.append(Link(*at, None, None, MISSING, detail))
            continue
        tr = _training_from_dir(ctx, model_dir, selection)
        links += _model_links(ctx, tr)
        links += _condition_links(ctx, tr, str(test_ds), condition, rows)
        if train_ds != test_ds:
            continue  # scored by `cross-corpus`, which logs to no training run
        links.append(_evaluation_link(ctx, tr, train_ds, condition, rows))
        if ctx.path(paths.scores_file(train_ds, model, condition)) != csv:
            links.append(_row_link(ctx, train_ds, model, condition, rows))
    return links


def _pick_rows(csv: Path, table: pd.DataFrame, pick: str) -> pd.DataFrame:
    """Row N (0-based), or the rows whose columns equal every `key=value` of the pick."""
    if pick.isdigit():
        if int(pick) >= len(table):
            raise DataError(f"{csv}: no row {pick} (it has {len(table)} rows, counted from 0)")
        return table.iloc[[int(pick)]]
    wanted = dict(part.split("=", 1) for part in pick.split(",") if "=" in part)
    unknown = sorted(set(wanted) - set(table.columns))
    if not wanted or unknown:
        raise DataError(f"{csv}: select rows as N or key=value,... over its columns ({unknown})")
    mask = np.ones(len(table), dtype=bool)
    for key, value in wanted.items():
        mask &= table[key].astype(str).to_numpy() == value
    if not mask.any():
        raise DataError(f"{csv}: no row has {pick}")
    return table[mask]


def _condition_links(
    ctx: Context, tr: Training, dataset: str | None, condition: str, rows: pd.DataFrame
) -> list[Link]:
    """condition.json (settings, seed) made from the model's store, with the rows' levels."""
    if dataset is None:
        detail = "neither the run nor params.yaml names the dataset"
        return [Link("condition", condition, None, None, None, MISSING, detail)]
    cond_dir = ctx.path(paths.corrupted_dir(dataset, condition))
    at = ("condition", condition, ctx.show(cond_dir / "condition.json"))
    if not (cond_dir / "condition.json").is_file() or not (cond_dir / "records.parquet").is_file():
        return [
            Link(
                *at, None, None, MISSING, f"run `robustmer corrupt {condition} --dataset {dataset}`"
            )
        ]
    info = read_json(cond_dir / "condition.json")
    store_json = ctx.path(tr.tags.get("robustmer.store_path") or paths.feature_dir(dataset))
    store_json = store_json / "store.json"
    actual = read_json(store_json).get("manifest_sha256") if store_json.is_file() else None
    recorded = info.get("store_manifest_sha256")
    status = _verdict(recorded, actual, STALE)
    detail = f"{info.get('kind')}, seed {info.get('seed')}, levels {info.get('levels')}"
    absent = sorted(set(rows["level"]) - set(info.get("levels", [])))
    if status == STALE:
        detail = "generated from another store (manifest hash differs); re-run corrupt"
    elif absent and status == OK:
        status, detail = STALE, f"the condition no longer has level(s) {absent}"
    keys = ("kind", "settings", "seed", "levels", "robustmer_version")
    links = [Link(*at, recorded, actual, status, detail, {k: info.get(k) for k in keys})]
    for level, names in (info.get("overlay_features") or {}).items():
        overlay = cond_dir / "levels" / level
        if level in set(rows["level"]) and (overlay / "store.json").is_file():
            store = FeatureStore(overlay)
            links += [feature_link(ctx, store, n, kind="overlay_feature") for n in names]
    return links


def _evaluation_link(
    ctx: Context, tr: Training, dataset: str, condition: str, rows: pd.DataFrame
) -> Link:
    """The scores file against the level scores evaluation logged to the training run."""
    path = ctx.path(paths.scores_file(dataset, tr.model, condition))
    at = ("evaluation", f"{tr.model} / {condition}", ctx.show(path))
    if not path.is_file():
        return Link(
            *at,
            None,
            None,
            MISSING,
            f"run `robustmer evaluate {tr.model} {condition} --dataset {dataset}`",
        )
    scores = pd.read_csv(path, dtype={"level": str, "fold": str})
    pooled = scores[scores["fold"] == paths.POOLED_FOLD]
    pooled = pooled.groupby(["level", "metric"])["value"].mean()
    logged = tr.run.data.metrics if tr.run is not None else {}
    keys = sorted({(str(lv), str(m)) for lv, m in zip(rows["level"], rows["metric"], strict=True)})
    recorded = {f"{lv}/{m}": logged.get(f"eval/{condition}/{lv}/{m}") for lv, m in keys}
    actual = {f"{lv}/{m}": _float(pooled.get((lv, m))) for lv, m in keys}
    info = {k: tr.tags.get(f"robustmer.eval_git_{k}") for k in ("commit", "dirty")}
    link = _values_link(at, recorded, actual, info)
    link.detail = {
        OK: "the scores match what evaluation logged to the training run",
        STALE: "the scores differ from what evaluation logged to the run (re-evaluated since?)",
        MISSING: "the training run logged no such eval/<condition>/<level> score "
        "(retrained after this evaluation? re-run evaluate)",
    }[link.status]
    return link


def _row_link(ctx: Context, dataset: str, model: str, condition: str, rows: pd.DataFrame) -> Link:
    """A report row against the scores file it was collected from."""
    path = ctx.path(paths.scores_file(dataset, model, condition))
    at = ("result_row", f"{model} / {condition}", ctx.show(path))
    if not path.is_file():
        return Link(*at, None, None, MISSING)
    scores = pd.read_csv(path, dtype={"level": str, "fold": str})
    cols = ["level", "fold", "seed", "metric"]
    lookup = {
        _key(k): v for k, v in zip(scores[cols].itertuples(False), scores["value"], strict=True)
    }
    recorded = {
        _key(k): float(v) for k, v in zip(rows[cols].itertuples(False), rows["value"], strict=True)
    }
    actual = {k: _float(lookup.get(k)) for k in recorded}
    link = _values_link(at, recorded, actual, {})
    link.detail = "the report's value vs the scores file" + (
        "" if link.status == OK else ": the report is older than the scores (re-run report)"
    )
    return link


# --- helpers ------------------------------------------------------------------------------------


def _verdict(recorded: Any, actual: Any, on_differ: str) -> str:
    if recorded is None or actual is None:
        return MISSING
    return OK if recorded == actual else on_differ


def _values_link(
    at: tuple[str, str, str],
    recorded: dict[str, float | None],
    actual: dict[str, float | None],
    info: dict[str, Any],
) -> Link:
    """Per-key numbers within the CSV's rounding; for big tables only mismatches are listed."""
    status = {k: _value_status(recorded[k], actual[k]) for k in recorded}
    shown = list(recorded) if len(recorded) <= LISTED else [k for k in recorded if status[k] != OK]
    shown = shown[:LISTED]
    info = {**info, "values": len(recorded), "mismatches": sum(s != OK for s in status.values())}
    return Link(*at, {k: recorded[k] for k in shown}, {k: actual[k] for k in shown},
                _worst(status.values()), "", info)  # fmt: skip


def _value_status(recorded: float | None, actual: float | None) -> str:
    if recorded is None or actual is None:
        return MISSING
    return OK if abs(recorded - actual) <= TOLERANCE * max(1.0, abs(actual)) else STALE


def _worst(statuses: Iterable[str]) -> str:
    order = (OK, STALE, MISSING, ALTERED)
    return max(statuses, key=order.index, default=OK)


def _key(values: Iterable[Any]) -> str:
    return "/".join(map(str, values))


def _float(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _redact(uri: str) -> str:
    """The tracking URI without credentials."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _unique(links: Iterable[Link]) -> list[Link]:
    """Links shared by several targets (one store, one corpus) once, in first-seen order."""
    seen: dict[tuple[str, str, str | None], Link] = {}
    for link in links:
        seen.setdefault((link.kind, link.name, link.path), link)
    return list(seen.values())


def _status_label(status: str) -> str:
    return status if status == OK else status.upper()


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64:
        return value[:12] + "…"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
