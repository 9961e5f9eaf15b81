"""IMDer training time per epoch on MOSI-shaped random data, against sampler and steps.

    .venv/bin/python benchmarks/imder_epoch_time.py [--batches N] [--threads 2] [--device cuda]

Random aligned features with MMSA MOSI's shapes (1284 training utterances, 50 steps; audio 5-d,
video 20-d, text 768-d BERT features), the MOSI preset's model (nlevels 4, dropouts) and its
optimiser (Adam 2e-3, batch 32, clip by value 1.0). Missing modalities per sample at rate 0.5
(the shared protocol), L1 regression. Times the MulT pretraining epoch and the IMDer epoch for
each sampler setting; with `--batches N` only N batches are timed and the epoch extrapolated.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from robustmer.corruption import masks
from robustmer.models.imder.mult import MulT
from robustmer.models.imder.network import IMDer

DIMS = {"audio": 5, "video": 20, "text": 768}
MOSI = {"seq_len": 50, "nlevels": 4, "attn_dropout_a": 0.2, "embed_dropout": 0.2}
SETTINGS = [("euler_maruyama", 100), ("euler_maruyama", 20), ("ode", 10), ("ode", 4), ("pc", 10)]


def batch(rng: np.random.Generator, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    return {m: torch.randn(size, 50, d, device=device) for m, d in DIMS.items()}


def time_epoch(
    model: torch.nn.Module,
    n_utt: int,
    batches: int | None,
    rng: np.random.Generator,
    device: torch.device,
    rate: float | None,
) -> float:
    size = 32
    n_batches = -(-n_utt // size)
    run = n_batches if batches is None else min(batches, n_batches)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()
    elapsed = 0.0
    for _ in range(run):
        x = batch(rng, size, device)
        y = torch.from_numpy(rng.uniform(-3, 3, size=size).astype(np.float32)).to(device)
        present = None
        if rate is not None:
            drop = masks.random_drop(size, rate, rng, 3)
            present = masks.present_to_torch(drop, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model.training_loss(x, None, y, present)[0]
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 1.0)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed += time.perf_counter() - start
    return elapsed * n_batches / run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=1284)
    parser.add_argument("--batches", type=int, help="time only this many batches, extrapolate")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rate", type=float, default=0.5, help="per-sample missing rate")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    device = torch.device(args.device)
    note = "" if args.batches is None else f" (extrapolated from {args.batches} batches)"
    where = f"{args.threads} CPU thread(s)" if device.type == "cpu" else str(device)
    out: dict[str, float] = {}
    mult = MulT(DIMS, 1, **MOSI).to(device)
    out["mult_pretrain"] = time_epoch(mult, args.utterances, args.batches, rng, device, None)
    print(f"MulT pretraining (MR 0): {out['mult_pretrain']:.1f} s per epoch on {where}{note}")
    for sampler, steps in SETTINGS:
        model = IMDer(DIMS, 1, sampler=sampler, steps=steps, **MOSI).to(device)
        model.load_pretrained(mult.state_dict())
        key = f"imder_{sampler}_{steps}"
        out[key] = time_epoch(model, args.utterances, args.batches, rng, device, args.rate)
        print(f"IMDer {sampler} {steps} steps, MR {args.rate}: {out[key]:.1f} s per epoch of "
              f"{args.utterances} utterances on {where}{note}", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
