"""One place that seeds every random number generator a job uses."""

from __future__ import annotations

import random

import numpy as np


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a fresh NumPy generator for explicit use."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def derive_seed(base: int, *parts: object) -> int:
    """A stable child seed from a base seed and labels (job names, folds), independent of order
    of execution, so that every executor gives each job the same seed."""
    import hashlib

    text = "|".join([str(base), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
