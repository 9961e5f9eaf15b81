"""NMER and IMDer step times at the papers' shapes: this checkout against another revision,
interleaved in one run.

    .venv/bin/python benchmarks/method_steps.py [--base REV] [--rounds 3] [--steps 3]
        [--threads 2] [--device cpu|cuda] [--only nmer_train ...] [--json out.json]

Workloads (random data, fixed seeds, the same in both versions):
- `nmer_train`: NMER stage-2 training step (batch 128, IEMOCAP shapes A [B, 60, 130],
  V [B, 50, 342], L [B, 22, 1024] frames, random six-pattern masks, frozen stage-1 teacher,
  Adam, clip 1.0 per sub-network); `nmer_eval`: its evaluation forward (eval mode, no grad).
- `imder_train_missing{0,1,2}`: IMDer training step at MOSI shapes (batch 32, 50 steps; audio 5,
  video 20, text 768) with 0, 1 or 2 modalities missing in every row, the released
  Euler-Maruyama sampler with 100 steps; `imder_train_missing1_ode4`: the 4-step ODE sampler.

Each (workload, version) runs in its own process (`--base` from a temporary git worktree, put
first on PYTHONPATH): one warm-up step, then `--steps` timed steps; the versions alternate for
`--rounds` rounds, so drift on a shared machine hits both alike. Prints the min and median step
time of each version and their ratio (this / base).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ("nmer_train", "nmer_eval", "imder_train_missing0", "imder_train_missing1",
             "imder_train_missing2", "imder_train_missing1_ode4")  # fmt: skip

WORKER = r"""
import json, sys, time
import numpy as np
import torch

workload, steps, threads, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(threads)
device = torch.device(device)
torch.manual_seed(0)
rng = np.random.default_rng(0)


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


if workload.startswith("nmer"):
    from robustmer.corruption import masks
    from robustmer.models.nmer.network import NMER, NMERStage1, kaiming_init

    dims = {"audio": 130, "video": 342, "text": 1024}
    shape = {"audio": 60, "video": 50, "text": 22}
    b = 128
    x = {m: torch.randn(b, shape[m], d, device=device) for m, d in dims.items()}
    y = torch.randint(0, 4, (b,), device=device)
    present = masks.present_to_torch(masks.random_pattern(b, rng), device)
    levels = dict.fromkeys(dims, "frame")
    teacher = NMERStage1(dims, levels, 4).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    model = NMER(dims, levels, 4)
    kaiming_init(model)
    model.load_stage1(teacher.state_dict())
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def step():
        if workload == "nmer_eval":
            model.eval()
            with torch.no_grad():
                model(x, None, present)
            return
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = model.training_loss(x, None, y, present, teacher)[0]
        loss.backward()
        for part in model.sub_networks().values():
            torch.nn.utils.clip_grad_norm_(part.parameters(), 1.0)
        opt.step()
else:
    from robustmer.models.imder.mult import MulT
    from robustmer.models.imder.network import IMDer

    dims = {"audio": 5, "video": 20, "text": 768}
    mosi = {"seq_len": 50, "nlevels": 4, "attn_dropout_a": 0.2, "embed_dropout": 0.2}
    b = 32
    missing = int(workload.split("missing")[1][0])
    sampler, n = ("ode", 4) if workload.endswith("ode4") else ("euler_maruyama", 100)
    x = {m: torch.randn(b, 50, d, device=device) for m, d in dims.items()}
    y = torch.randn(b, device=device)
    present = {m: torch.ones(b, dtype=torch.bool, device=device) for m in dims}
    for m in ("video", "audio")[:missing]:
        present[m][:] = False
    mult = MulT(dims, 1, **mosi)
    model = IMDer(dims, 1, sampler=sampler, steps=n, **mosi)
    model.load_pretrained(mult.state_dict())
    model.to(device).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model.training_loss(x, None, y, present)[0]
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 1.0)
        opt.step()

step()
sync()
times = []
for _ in range(steps):
    start = time.perf_counter()
    step()
    sync()
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def _measure(workload: str, src: Path, steps: int, threads: int, device: str) -> list[float]:
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, workload, str(steps), str(threads), device],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"{workload} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), args.base],
                       cwd=ROOT, check=True)  # fmt: skip
        try:
            versions = {"base": base / "src", "this": ROOT / "src"}
            for workload in args.only:
                times: dict[str, list[float]] = {v: [] for v in versions}
                for _ in range(args.rounds):
                    for name, src in versions.items():
                        times[name] += _measure(workload, src, args.steps, args.threads,
                                                args.device)  # fmt: skip
                row = {f"{v}_{k}": round(f(t), 4) for v, t in times.items()
                       for k, f in (("min", min), ("median", statistics.median))}  # fmt: skip
                row["ratio_min"] = round(row["this_min"] / row["base_min"], 3)
                row["ratio_median"] = round(row["this_median"] / row["base_median"], 3)
                out[workload] = row
                print(f"{workload:26} base min {row['base_min']:.3f} s median "
                      f"{row['base_median']:.3f} s | this min {row['this_min']:.3f} s median "
                      f"{row['this_median']:.3f} s | this/base {row['ratio_min']:.2f} (min) "
                      f"{row['ratio_median']:.2f} (median)", flush=True)  # fmt: skip
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)
    if args.json:
        args.json.write_text(json.dumps({"base": args.base, "device": args.device,
                                         "threads": args.threads, **out}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
