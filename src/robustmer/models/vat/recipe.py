"""VAT's training recipe: ALBEF-style alignment pretraining, then fine-tuning with momentum
distillation.

pretrain (per fold and seed): `VATPretrain.loss` (contrast with a queue + matching with hard
negatives), labels never read, over every row the fold may learn from without labels: its
training and validation rows and the unlabelled pool (the other folds' rows; never its test
rows). The fit's targets are row ids, so the queue knows which entries are copies of a row. The
last epoch is kept (nothing to select by); the checkpoint holds the `VAT` weights.

train: a `VAT` initialised from the pretrained weights (or from scratch with `pretraining:
false`) with a momentum copy (`distillation: true`), trained on the labelled rows with the
entry's training corruption; the best epoch by the validation metric, as for every model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustmer.errors import ConfigError
from robustmer.models.method import FitResult, FoldContext
from robustmer.seeding import derive_seed


@dataclass(frozen=True)
class AlignThenDistill:
    """The VAT recipe; its switches are the method's options (the paper's ablations)."""

    pretrains = True

    def pretrain(self, fold: FoldContext) -> FitResult:
        import torch

        from robustmer.models.vat.augment import mask_frames
        from robustmer.models.vat.pretrain import VATPretrain, queue_capacity

        opts = _opts(fold)
        core = fold.build()
        if not opts["pretraining"]:  # ablation: fine-tuning starts from the initial weights
            state = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
            return FitResult(0, {}, 0, state, extra={"pretraining": False})
        split = fold.split
        rows = np.union1d(np.union1d(split.train, split.val), split.unlabelled)
        batch = fold.cfg.batch_size
        requested = int(opts["queue_size"])
        if requested % batch:
            raise ConfigError(
                f"models.{fold.spec.name}.options.queue_size: {requested} is not a multiple of "
                f"the pretraining batch size {batch} (the queue takes whole batches)"
            )
        size = queue_capacity(requested, len(rows), batch)
        model = VATPretrain(
            core, embed_dim=int(opts["embed_dim"]), temp=float(opts["temp"]), queue_size=size,
            momentum=float(opts["momentum"]), alpha=float(opts["alpha"]),
            matching=bool(opts["matching"]),
        )  # fmt: skip
        generator = torch.Generator().manual_seed(derive_seed(fold.seed, "vat", "pretrain"))
        steps = -(-len(rows) // batch)

        def objective(m: Any, inputs: Any, lengths: Any, ids: Any, present: Any) -> Any:
            inputs = mask_frames(inputs, lengths, opts["time_mask"], opts["feature_mask"],
                                 generator)  # fmt: skip
            return m.loss(inputs, lengths, ids, steps_per_epoch=steps, generator=generator)[0]

        result = fold.fit(model, objective=objective, train=rows, tensors=_row_ids(fold.tensors),
                          keep="last", tag="pretrain/", streams=(generator,))  # fmt: skip
        result.state_dict = {k: v.cpu() for k, v in model.core_state().items()}
        result.extra = {
            "n_rows": len(rows),
            "n_unlabelled": len(split.unlabelled),
            "queue_size": size,
            "temperature": round(float(model.temp.detach()), 6),
        }
        return result

    def train(self, fold: FoldContext) -> FitResult:
        import torch

        from robustmer.models.vat.augment import mask_frames

        opts = _opts(fold)
        model = fold.build()
        if opts["pretraining"]:
            model.load_state_dict(fold.stage1_state())
        if opts["distillation"]:
            model.attach_momentum(float(opts["momentum"]))
        generator = torch.Generator().manual_seed(derive_seed(fold.seed, "vat", "augment"))
        steps = -(-len(fold.split.train) // fold.cfg.batch_size)
        weights = {"fused": 1.0, "audio": float(opts["unimodal_weight"]),
                   "video": float(opts["unimodal_weight"])}  # fmt: skip

        def objective(m: Any, inputs: Any, lengths: Any, y: Any, present: Any) -> Any:
            inputs = mask_frames(inputs, lengths, opts["time_mask"], opts["feature_mask"],
                                 generator)  # fmt: skip
            loss, _ = m.finetune_loss(inputs, lengths, y, alpha=float(opts["alpha"]),
                                      steps_per_epoch=steps, weights=weights,
                                      present=present)  # fmt: skip
            return loss

        result = fold.fit(model, objective=objective, corruption=fold.training_corruption(),
                          streams=(generator,))  # fmt: skip
        model.detach_momentum()
        result.state_dict = {
            k: v for k, v in result.state_dict.items() if not k.startswith("momentum.")
        }
        result.extra = {"pretrained": bool(opts["pretraining"]),
                        "distillation": bool(opts["distillation"])}  # fmt: skip
        return result


def _opts(fold: FoldContext) -> dict[str, Any]:
    from robustmer.models.vat import METHOD

    return METHOD.resolved_options(fold.spec)


def _row_ids(tensors: Any) -> Any:
    """The fold's tensors with each row's index as its target (`y`): pretraining reads no label,
    and the queue needs to know which entries are copies of a row."""
    import torch

    out = copy.copy(tensors)
    out.y = torch.arange(len(tensors.labels), device=tensors.device)
    return out
