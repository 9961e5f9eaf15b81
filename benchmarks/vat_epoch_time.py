"""VAT's seconds per training step on MER2024-shaped random data, extrapolated to an epoch.

MER2024 has 5,030 labelled and 115,595 unlabelled utterances. Pretraining reads every
non-test row: with 5-fold CV, 4,024 labelled + 115,595 unlabelled = 119,619 rows per fold.
Fine-tuning reads the 4,024 labelled training rows of a fold. The sample here has realistic
shapes:
- audio: 128-bin log-mel frames at 100 Hz, 2-8 s (200-800 frames);
- video: 512-d CLIP-base features of face frames at 25 fps (50-200 frames).
Each preset pools the frames to its `max_frames`.

A step is one batch of the pretraining loss (contrast with the queue + matching, momentum
update) or of the distilled fine-tuning loss, with backward and an AdamW step; loading the
batch is not counted. The first steps are a warm-up, not timed.

    .venv/bin/python benchmarks/vat_epoch_time.py [--presets builtin_cpu mer2024] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustmer.config import preset
from robustmer.device import resolve_device
from robustmer.models.vat import NETWORK_OPTIONS, PRETRAIN_OPTIONS
from robustmer.models.vat.network import VAT
from robustmer.models.vat.pretrain import VATPretrain

PRETRAIN_ROWS = 4024 + 115595
FINETUNE_ROWS = 4024
CLASSES = 6


def batch(size: int, device: torch.device, g: torch.Generator) -> tuple[dict, dict]:
    """A batch of random MER2024-shaped frame sequences, zero-padded, and their lengths."""
    lengths = {
        "audio": torch.randint(200, 801, (size,), generator=g),
        "video": torch.randint(50, 201, (size,), generator=g),
    }
    dims = {"audio": 128, "video": 512}
    inputs = {}
    for m, lens in lengths.items():
        x = torch.randn(size, int(lens.max()), dims[m], generator=g)
        x *= (torch.arange(x.shape[1]).unsqueeze(0) < lens.unsqueeze(1)).unsqueeze(-1)
        inputs[m] = x.to(device)
    return inputs, lengths


def time_steps(step: object, steps: int, warmup: int, device: torch.device) -> list[float]:
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        step()  # type: ignore[operator]
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["builtin_cpu", "mer2024"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None,
                        help="time this batch instead of the preset's (the epoch estimate scales "
                        "the per-row time to the preset's batch): the paper-sized model at batch "
                        "64 needs more memory than 24 GB")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device {device}, {args.threads} threads, {args.steps} timed steps after "
          f"{args.warmup} warm-up", flush=True)  # fmt: skip
    for name in args.presets:
        measure(name, args.steps, args.warmup, device, args.batch)


def measure(
    name: str, steps: int, warmup: int, device: torch.device, batch_size: int | None
) -> None:
    """Time the pretraining and the fine-tuning step of one preset and print both."""
    p = preset("vat", name)
    opts = {**NETWORK_OPTIONS, **PRETRAIN_OPTIONS, **p.get("options", {})}
    preset_batch = int(p["pretrain"]["batch_size"])
    size = batch_size or preset_batch
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    network = {k: opts[k] for k in NETWORK_OPTIONS}
    core = VAT({"audio": 128, "video": 512}, CLASSES, width=int(p["hidden_dim"]),
               dropout=float(p["dropout"]), **network)  # fmt: skip
    queue = min(int(opts["queue_size"]), PRETRAIN_ROWS - size)
    model = VATPretrain(core, embed_dim=int(opts["embed_dim"]), queue_size=queue).to(device)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    steps_pre = -(-PRETRAIN_ROWS // preset_batch)
    data = [batch(size, device, g) for _ in range(2)]
    ids = torch.arange(size, device=device)
    done = [0]

    def pre_step() -> None:
        inputs, lengths = data[done[0] % 2]
        done[0] += 1
        loss, _ = model.loss(inputs, lengths, ids + size * done[0], steps_per_epoch=steps_pre,
                             generator=g)  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()

    model.train()
    pre = time_steps(pre_step, steps, warmup, device)
    core.attach_momentum(float(opts["momentum"]))
    core.to(device)
    fine_opt = torch.optim.AdamW([q for q in core.parameters() if q.requires_grad], lr=1e-4)
    y = torch.randint(0, CLASSES, (size,), generator=g).to(device)
    steps_fine = -(-FINETUNE_ROWS // preset_batch)
    weights = {"fused": 1.0, "audio": 0.3, "video": 0.3}

    def fine_step() -> None:
        inputs, lengths = data[done[0] % 2]
        done[0] += 1
        loss, _ = core.finetune_loss(inputs, lengths, y, alpha=0.4,
                                     steps_per_epoch=steps_fine, weights=weights)  # fmt: skip
        fine_opt.zero_grad()
        loss.backward()
        fine_opt.step()

    fine = time_steps(fine_step, steps, warmup, device)
    n_params = sum(q.numel() for q in core.parameters() if q.requires_grad)
    rows = [("pretrain", pre, steps_pre, PRETRAIN_ROWS),
            ("fine-tune", fine, steps_fine, FINETUNE_ROWS)]  # fmt: skip
    scale = preset_batch / size  # per-row time x the preset's batch
    for stage, times, n_steps, n_rows in rows:
        med = statistics.median(times) * scale
        print(f"{name:12s} {stage:9s} timed batch {size:3d} (preset {preset_batch})  "
              f"{n_params / 1e6:6.2f} M params  {med:7.3f} s per preset step (median; min "
              f"{min(times) * scale:.3f})  {n_steps} steps/epoch over {n_rows} rows -> "
              f"{med * n_steps / 60:8.1f} min/epoch", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
