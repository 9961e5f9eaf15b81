"""NMER training time per epoch on IEMOCAP-shaped random data (stage 1 and stage 2).

    .venv/bin/python benchmarks/nmer_epoch_time.py [--utterances 5531] [--batches N] [--threads 2]

Random features with the MMIN IEMOCAP pack's shapes: audio ComParE LLDs 130-d at 10 Hz, video
DenseFace 342-d per frame, text BERT-large tokens 1024-d; lengths drawn per utterance around
IEMOCAP's (audio and video 20-120 frames, text 5-40 tokens), zero-padded per batch. Stage 1
trains NMERStage1 (CE + CMD, batch 64, clip 0.5 per sub-network); stage 2 trains NMER with a
frozen stage-1 teacher and random six-pattern masks (batch 128, clip 1.0). With `--batches N`
only N batches are timed and the epoch time is extrapolated (said in the output).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from robustmer.corruption import masks
from robustmer.models.nmer.network import NMER, NMERStage1, kaiming_init

DIMS = {"audio": 130, "video": 342, "text": 1024}
LENGTHS = {"audio": (20, 120), "video": (20, 120), "text": (5, 40)}
LEVELS = dict.fromkeys(DIMS, "frame")


def batch(rng: np.random.Generator, size: int) -> dict[str, torch.Tensor]:
    out = {}
    for m, dim in DIMS.items():
        lengths = rng.integers(*LENGTHS[m], size=size)
        x = torch.zeros(size, int(lengths.max()), dim)
        for i, n in enumerate(lengths):
            x[i, :n] = torch.randn(int(n), dim)
        out[m] = x
    return out


def clip(model: torch.nn.Module, norm: float) -> None:
    for part in model.sub_networks().values():
        torch.nn.utils.clip_grad_norm_(part.parameters(), norm)


def time_stage(stage: int, n_utt: int, batches: int | None, rng: np.random.Generator) -> float:
    size = 64 if stage == 1 else 128
    n_batches = -(-n_utt // size)
    run = n_batches if batches is None else min(batches, n_batches)
    teacher = NMERStage1(DIMS, LEVELS, 4)
    if stage == 1:
        model: torch.nn.Module = teacher
        opt = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.9, 0.999))
    else:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        model = NMER(DIMS, LEVELS, 4)
        kaiming_init(model)
        model.load_stage1(teacher.state_dict())
        opt = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
    model.train()
    elapsed = 0.0
    for _ in range(run):
        x = batch(rng, size)
        y = torch.from_numpy(rng.integers(0, 4, size=size))
        present = masks.present_to_torch(masks.random_pattern(size, rng))
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if stage == 1:
            loss = model.training_loss(x, None, y)[0]
        else:
            loss = model.training_loss(x, None, y, present, teacher)[0]
        loss.backward()
        clip(model, 0.5 if stage == 1 else 1.0)
        opt.step()
        elapsed += time.perf_counter() - start
    return elapsed * n_batches / run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=5531)
    parser.add_argument("--batches", type=int, help="time only this many batches, extrapolate")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    note = "" if args.batches is None else f" (extrapolated from {args.batches} batches)"
    for stage in (1, 2):
        seconds = time_stage(stage, args.utterances, args.batches, rng)
        print(f"stage {stage}: {seconds:.1f} s per epoch of {args.utterances} utterances on "
              f"{args.threads} CPU thread(s){note}")  # fmt: skip


if __name__ == "__main__":
    main()
