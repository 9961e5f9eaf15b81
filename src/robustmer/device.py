"""Which device a stage runs on, its CPU threads, and mixed precision: one place for all stages.

Feature extraction, training and evaluation all resolve `device:` here, so `auto` means the
same thing everywhere and no stage imports another stage's module to find out.
"""

from __future__ import annotations

import contextlib
import os

import torch

from robustmer.errors import ConfigError


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


def fitting_workers(threads: int) -> int:
    """How many processes of `threads` torch threads the usable cores hold (at least one):
    oversubscribed torch threads spin against each other."""
    return max(1, usable_cores() // max(1, threads))


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """float16 autocast on CUDA, nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()
