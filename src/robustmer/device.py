"""Which device a stage runs on, its CPU threads, and mixed precision: one place for all stages.

Feature extraction, training and evaluation all resolve `device:` here, so `auto` means the
same thing everywhere and no stage imports another stage's module to find out.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch

from robustmer.errors import ConfigError

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """`auto` -> the first CUDA device if there is one, else CPU; `cuda[:N]` must exist."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {name} but torch sees no CUDA GPU; use `device: auto`")
        # Deterministic cuBLAS (torch.use_deterministic_algorithms) needs this workspace setting.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return device


def configure_threads(num_threads: int, device: torch.device) -> None:
    """torch intra-op threads on CPU (small models are fastest with one)."""
    if device.type == "cpu":
        torch.set_num_threads(num_threads)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a SLURM or cgroup allotment)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def unit_workers(requested: int, threads: int, units: int, device: torch.device, name: str) -> int:
    """Processes for `units` independent (seed, fold) units of `name`: `requested` on CPU, but no
    more than the units nor than `threads`-thread processes the usable cores hold (oversubscribed
    torch threads spin against each other; a log line says when the count was lowered); one on
    CUDA, where batching is the parallelism."""
    if device.type != "cpu":
        return 1
    cores = usable_cores()
    fits = max(1, cores // max(1, threads))
    if requested > fits:
        log.info("%s: train.workers %d lowered to %d (%d usable core(s), %d thread(s) per worker)",
                 name, requested, fits, cores, threads)  # fmt: skip
    return max(1, min(requested, units, fits))


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """float16 autocast on CUDA, nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()
