"""Checkpoints that are data, not code, written so a crash never leaves a broken one.

Writes go to a temporary file in the same folder, are flushed to disk and then
renamed over the old file (an atomic step on POSIX), so at every moment the
path holds either the previous checkpoint or the new one. Loading uses
``torch.load(weights_only=True)``: a checkpoint cannot run code (a safe
boundary from torch 2.6 on, the project's floor; CVE-2025-32434 broke it before).
"""
from __future__ import annotations

import random
import warnings
from pathlib import Path

import torch

from ..utils.atomic import atomic_write
from ..utils.errors import UserError


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Saves a checkpoint dict atomically."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict:
    """Loads a checkpoint onto the CPU without executing code from it.

    Raises:
        UserError: if the file is missing, unreadable or not a checkpoint of this project.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {str(path)!r}; pass the run directory of an earlier search")
    try:
        with warnings.catch_warnings():  # the refusal is reported below as one line; torch's warnings add noise
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and weights_only errors all mean "not a usable checkpoint"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint {str(path)!r} is corrupt or unreadable ({first[:160]}); "
                        "start a new run or restore the file") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise UserError(f"{str(path)!r} is not a checkpoint written by this project")
    return state


def rng_state() -> dict:
    """The global RNG states (torch CPU and CUDA, Python, NumPy) as checkpointable data."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached]
    except ImportError:
        pass
    return state


def set_rng_state(state: dict) -> None:
    """Restores what ``rng_state`` returned."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
