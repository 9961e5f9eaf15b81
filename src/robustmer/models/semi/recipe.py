"""MER2024-SEMI's training recipe: label-free contrastive pretraining, then self-training.

pretrain (one per fold and seed): the network's `pretrain_loss` (modality contrast + clean vs
noisy contrast, no labels) over the fold's labelled training rows and its unlabelled pool rows;
the weights of the last epoch are kept (there is no label to select an epoch by).

train: round 0 fine-tunes a network initialised from the pretrained encoders on the labelled
rows (classes oversampled to the largest class); each further round lets the previous round's
voted classifier label the pool, keeps the rows whose confidence reaches their class threshold,
and trains a new network (again from the pretrained encoders) on labelled + pseudo-labelled
rows. The last round's network is the fold's model. Pseudo-label counts per class and round,
and their accuracy where the store kept the withheld labels (the built-in corpus), go to MLflow
and to the fold's entry of train_summary.json.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustmer.models.method import FitResult, FoldContext
from robustmer.models.semi.pseudo import (
    adaptive_thresholds,
    class_thresholds,
    oversample,
    select_confident,
)
from robustmer.seeding import derive_seed

log = logging.getLogger(__name__)


def _pretrain_objective(generator: Any) -> Any:
    def objective(model: Any, inputs: Any, lengths: Any, y: Any, present: Any) -> Any:
        return model.pretrain_loss(inputs, generator)[0]

    return objective


def _finetune_objective(model: Any, inputs: Any, lengths: Any, y: Any, present: Any) -> Any:
    return model.training_loss(inputs, y)[0]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class SelfTraining:
    """The SEMI recipe; its switches are the method's options (the paper's ablations)."""

    pretrains = True

    def pretrain(self, fold: FoldContext) -> FitResult:
        import torch

        model = fold.build()
        if not _opts(fold)["contrastive_pretraining"]:  # ablation: keep the initial weights
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            return FitResult(0, {}, 0, state, extra={"contrastive_pretraining": False})
        rows = np.union1d(fold.split.train, fold.split.unlabelled)
        generator = torch.Generator().manual_seed(derive_seed(fold.seed, "semi", "noise"))
        result = fold.fit(model, objective=_pretrain_objective(generator), train=rows,
                          keep="last", tag="pretrain/", streams=(generator,))  # fmt: skip
        result.extra = {"n_rows": len(rows), "n_unlabelled": len(fold.split.unlabelled)}
        return result

    def train(self, fold: FoldContext) -> FitResult:
        opts = _opts(fold)
        stage1 = fold.stage1_state() if opts["contrastive_pretraining"] else None
        rng = np.random.default_rng(derive_seed(fold.seed, "semi", "oversample"))
        labelled = np.asarray(fold.split.train)

        def student(rows: np.ndarray, tensors: Any, tag: str) -> tuple[Any, FitResult]:
            model = fold.build()
            if stage1 is not None:
                model.load_encoders(stage1)
            if opts["oversample"]:
                labels = tensors.labels[rows].cpu().numpy()
                rows = rows[oversample(labels, rng)]
            result = fold.fit(model, objective=_finetune_objective, train=rows, tensors=tensors,
                              tag=tag)  # fmt: skip
            return model, result

        started = time.perf_counter()
        model, result = student(labelled, fold.tensors, "round_0/")
        round_0_s = time.perf_counter() - started
        pool = np.asarray(fold.split.unlabelled)
        rounds: list[dict[str, Any]] = []
        if opts["pseudo_labels"] and len(pool):
            for r in range(1, int(opts["rounds"]) + 1):
                started = time.perf_counter()
                picked, labels, record = _pseudo_labels(fold, model, pool, opts)
                record["round"] = r
                rounds.append(record)
                tensors = fold.tensors.with_labels(picked, labels)
                rows = np.concatenate([labelled, picked])
                model, result = student(rows, tensors, f"round_{r}/")
                # A round's time: the teacher labelling the pool plus the student's training.
                record["seconds"] = round(time.perf_counter() - started, 3)
                fold.log_metrics(_round_metrics(record, fold.data.classes), step=r)
        result.extra = {
            "n_labelled": len(labelled),
            "n_unlabelled": len(pool),
            "round_0_seconds": round(round_0_s, 3),
            "pseudo_labels": rounds,
        }
        return result


def _opts(fold: FoldContext) -> dict[str, Any]:
    from robustmer.models.semi import METHOD

    return METHOD.resolved_options(fold.spec)


def _pseudo_labels(
    fold: FoldContext, teacher: Any, pool: np.ndarray, opts: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The teacher's confident pool rows and their labels, and what to record about them."""
    classes = fold.data.classes
    given = {c: v for c, v in dict(opts["thresholds"]).items() if c in classes}
    base = class_thresholds(classes, given, float(opts["threshold"]))
    probs = _softmax(fold.predict(teacher, pool))
    thresholds = base
    if opts["adaptive_thresholds"]:
        thresholds = adaptive_thresholds(probs, base, min_threshold=float(opts["min_threshold"]))
    rows, labels = select_confident(probs, thresholds)
    picked = pool[rows]
    counts = {c: int((labels == i).sum()) for i, c in enumerate(classes)}
    record: dict[str, Any] = {
        "thresholds": {c: round(float(t), 6) for c, t in zip(classes, thresholds, strict=True)},
        "counts": counts,
        "n_pool": len(pool),
    }
    withheld = fold.data.withheld
    if withheld is not None:  # the truth the corpus withheld: how good are the pseudo-labels?
        truth = withheld[picked]
        record["correct"] = {c: int(((labels == i) & (truth == i)).sum())
                             for i, c in enumerate(classes)}  # fmt: skip
        record["accuracy"] = float((labels == truth).mean()) if len(labels) else float("nan")
    log.info("%s fold %d seed %d: %d of %d pool rows pseudo-labelled %s", fold.spec.name,
             fold.split.fold, fold.replicate, len(picked), len(pool), counts)  # fmt: skip
    return picked, labels, record


def _round_metrics(record: dict[str, Any], classes: list[str]) -> dict[str, float]:
    r = record["round"]
    out = {f"pseudo_round_{r}_n_{c}": float(record["counts"][c]) for c in classes}
    out[f"pseudo_round_{r}_n"] = float(sum(record["counts"].values()))
    out[f"pseudo_round_{r}_seconds"] = float(record["seconds"])
    if "accuracy" in record:
        out[f"pseudo_round_{r}_accuracy"] = record["accuracy"]
    return out
