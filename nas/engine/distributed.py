"""Data-parallel search and training across processes (``torchrun``): NCCL on GPUs, gloo on CPUs.

Every rank holds the full supernet and the same architecture logits, seeds its
Gumbel generator identically, and so draws the same architecture sample every
step. Each rank computes gradients on its shard of the global batch; one
all-reduce per step averages them (weights, logits, and a few loop flags
carried in the same buffer), so the optimizers stay in lock step and every
rank ends with the same architecture. Only rank 0 writes files.

A plain ``all_reduce`` of the gradients replaces ``DistributedDataParallel``:
the sampled sub-graph changes every step (unsampled ops have no gradient),
which DDP's bucketed reducer handles badly; since all ranks sample the same
ops, the set of gradients to average is the same on every rank.
"""
from __future__ import annotations

import atexit
import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


@dataclass
class DistContext:
    """Where this process stands in a (possibly one-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Joins the process group that ``torchrun`` describes in the environment, if any.

    Args:
        device: The configured device; CUDA runs use NCCL and one GPU per local rank, else gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    ctx = DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
        # Tear the group down before the interpreter does: left to exit, a gloo rank's threads can be destroyed
        # while still joinable, which aborts the process (SIGABRT) after its work is done.
        atexit.register(_destroy_process_group)
    return ctx


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(params: list[torch.nn.Parameter], world_size: int,
                      extra: torch.Tensor | None = None) -> torch.Tensor | None:
    """Averages the gradients of ``params`` (those that have one) across ranks, in one all-reduce.

    Args:
        params: Parameters whose ``.grad`` to average in place.
        world_size: Number of ranks.
        extra: A small float tensor summed (not averaged) along with the gradients,
            e.g. loop flags that every rank must agree on.

    Returns:
        ``extra`` summed over ranks (None when not given).
    """
    grads = [p.grad for p in params if p.grad is not None]
    tensors = grads + ([extra.reshape(-1).to(grads[0].dtype if grads else torch.float32)] if extra is not None else [])
    if not tensors:
        return None
    flat = _flatten_dense_tensors(tensors)
    if grads:
        n = sum(g.numel() for g in grads)
        flat[:n].div_(world_size)  # dividing first keeps the sum of averages in range
    dist.all_reduce(flat)
    out = _unflatten_dense_tensors(flat, tensors)
    for g, reduced in zip(grads, out):
        g.copy_(reduced)
    return out[-1].reshape(extra.shape) if extra is not None else None


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sums a tensor over ranks in place and returns it."""
    dist.all_reduce(tensor)
    return tensor


def broadcast_module(module: torch.nn.Module) -> None:
    """Copies rank 0's parameters and buffers to every rank."""
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is True on any rank."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


class StopControl:
    """Stop requests (from signal handlers) and periodic checkpoints inside an epoch.

    In a multi-process run every rank must pause at the same step, so the
    request is agreed across ranks (one tiny all-reduce per step).

    Args:
        every: Checkpoint every K steps inside an epoch (0: never).
        dist: This process's place in the run.
    """

    def __init__(self, every: int = 0, dist: DistContext | None = None):
        self.every, self.dist = every, dist or DistContext()
        self.signal: int | None = None

    def request(self, signum: int) -> None:
        """Asks the loop to checkpoint and stop after the current step (signal-handler safe)."""
        self.signal = signum

    def check(self, step_done: int, steps: int, device: torch.device) -> tuple[bool, bool]:
        """``(stop, checkpoint_due)`` after ``step_done`` of ``steps`` steps of an epoch."""
        stop = self.signal is not None
        if self.dist.enabled:
            stop = any_rank(stop, device)
            if stop and self.signal is None:
                self.signal = signal.SIGTERM  # another rank was signalled
        due = bool(self.every) and step_done % self.every == 0 and step_done < steps
        return stop, due
