"""Seed streams derived from the master seed in params.yaml.

Each stage (and each fold, model, ...) gets its own independent stream from the master seed and a
name, so adding a stage or a model never shifts the random numbers another one sees.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np


def derive_seed(master: int, *names: object) -> int:
    """A 32-bit seed from the master seed and a path of names (stable across runs and machines)."""
    key = "/".join([str(master), *map(str, names)]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")


def rng(master: int, *names: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(master, *names))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) and ask torch for deterministic kernels."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
