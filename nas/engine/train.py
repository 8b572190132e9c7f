"""Retraining a discrete network from scratch: the loop of ``train_final.py``.

SGD with a cosine schedule, optional auxiliary head and drop path (DARTS's
evaluation protocol), bf16 autocast on CUDA, and the same checkpoint, resume
and stop-signal behaviour as the search loop.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.atomic import atomic_write
from .checkpoint import rng_state, set_rng_state
from ..config import TrainConfig
from ..data import TensorLoader
from .distributed import DistContext, average_gradients, broadcast_module
from .evaluation import evaluate_classifier
from .loop import EpochLoop, cosine_scheduler

FINAL = "final.json"


def count_parameters(model: nn.Module, exclude: str | None = None) -> int:
    """Parameters of ``model``, leaving out those whose name starts with ``exclude``."""
    return sum(p.numel() for n, p in model.named_parameters() if not (exclude and n.startswith(exclude)))


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on one image (a multiply-add counts 2), in eval mode."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return int(counter.get_total_flops())


class FinalTrainer(EpochLoop):
    """Trains a discrete network and owns its run directory (files, checkpoints and resume: ``nas.engine.loop``).

    Args:
        network: The network (on its device). Its forward returns logits, or
            ``(logits, aux_logits)`` in training mode when it has an auxiliary head.
        train: Training batches.
        test: Test batches.
        settings: A ``TrainConfig``.
        out_dir: Run directory; None writes nothing.
        log: Where epoch summaries go.
        dist: This process's place in a multi-process run (gradients averaged, data sharded).
        val: Validation batches held out of the training set (``train.val_split``); None: no val metrics.
    """

    checkpoint_key = "optimizer"
    test_set = ""  # where the test images come from, in words (written to final.json)
    val_set = ""   # where the validation images come from, in words (written to final.json)
    wrong_checkpoint = "is a search checkpoint, not one of train_final.py"
    epochs_key = "train.epochs"
    divergence_hint = "lower {key} or set train.grad_clip"

    def __init__(self, network: nn.Module, train: TensorLoader, test: TensorLoader,
                 settings: TrainConfig | None = None, out_dir: str | Path | None = None,
                 log: Callable[[str], None] = print, dist: DistContext | None = None,
                 val: TensorLoader | None = None):
        self.s = settings or TrainConfig()
        super().__init__(self.s.epochs, self.s.checkpoint_every, out_dir, log, dist)
        self.net, self.train_data, self.test_data, self.val_data = network, train, test, val
        if self.dist.enabled:
            broadcast_module(network)
        self.optimizer = torch.optim.SGD(network.parameters(), lr=self.s.lr, momentum=self.s.momentum,
                                         nesterov=self.s.nesterov and self.s.momentum > 0,
                                         weight_decay=self.s.weight_decay)
        self.scheduler = cosine_scheduler(self.optimizer, self.s.epochs, self.s.lr_min)
        self.device = train.device
        self.amp = self.s.amp and self.device.type == "cuda"

    def network(self) -> nn.Module:
        return self.net

    def steps_per_epoch(self) -> int:
        return len(self.train_data)

    def divergence_key(self, nonfinite: list[str], flags: int = 0) -> str:
        return f"train.lr ({self.s.lr:g})"

    def _loss(self, x: torch.Tensor, y: torch.Tensor):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.net(x)
            logits, aux = out if isinstance(out, tuple) else (out, None)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.s.label_smoothing)
            if aux is not None and self.s.auxiliary_weight > 0:
                loss = loss + self.s.auxiliary_weight * F.cross_entropy(aux.float(), y,
                                                                        label_smoothing=self.s.label_smoothing)
        return loss, logits

    def train_epoch(self, epoch: int) -> dict:
        """Runs (the rest of) one epoch and returns its metrics."""
        s = self.s
        self.scheduler.step(epoch)
        if hasattr(self.net, "drop_path_prob"):
            self.net.drop_path_prob = s.drop_path_prob * epoch / s.epochs  # DARTS: ramped linearly
        self.net.train()
        sums = self.epoch_sums(("loss", "correct"), ("seen",), self.device)
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)  # the first non-finite step (no sync)
        start = self.step
        bar = self.progress_bar(self.train_data.epoch(epoch, start=start), epoch, len(self.train_data), s.progress)
        for step, (x, y) in enumerate(bar, start=start):
            loss, logits = self._loss(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.dist.enabled:  # average gradients; every rank learns of any rank's non-finite loss
                bad = bad | (average_gradients(list(self.net.parameters()), self.dist.world_size,
                                               extra=(~torch.isfinite(loss)).float()) > 0)
            norm = nn.utils.clip_grad_norm_(self.net.parameters(), s.grad_clip if s.grad_clip > 0 else float("inf"))
            bad = bad | ~(torch.isfinite(loss) & torch.isfinite(norm))
            first_bad = torch.where((first_bad < 0) & bad, step, first_bad)
            self.optimizer.step()
            sums.sums["loss"] += loss.detach() * y.numel()
            sums.sums["correct"] += (logits.argmax(1) == y).sum()
            sums.counts["seen"] += y.numel()
            self.step = step + 1
            self.checkpoint_in_epoch(
                epoch, len(self.train_data), self.device, diverged=lambda: self._raise_if_bad(epoch, first_bad),
                bar=bar, partial=sums.partial)
        bar.close()
        self._raise_if_bad(epoch, first_bad)  # one check per epoch: a diverged epoch is never checkpointed
        self.step = 0
        totals, counts = sums.totals(self.dist, summed_counts=("seen",))
        metrics = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                   "train_loss": totals["loss"] / counts["seen"], "train_acc": 100.0 * totals["correct"] / counts["seen"]}
        if epoch + 1 == s.epochs or (s.eval_every and (epoch + 1) % s.eval_every == 0):
            metrics["test_loss"], metrics["test_acc"], metrics["test_acc5"] = self.evaluate()
            if self.val_data is not None:
                metrics["val_loss"], metrics["val_acc"], _ = self.evaluate(self.val_data)
        metrics["epoch_time"] = sums.elapsed()
        return metrics

    def _raise_if_bad(self, epoch: int, first_bad: torch.Tensor) -> bool:
        """Raises ``RunDiverged`` naming the first non-finite step of the epoch, if any (one sync); else False."""
        step = int(first_bad)
        if step >= 0:
            raise self.diverged(epoch, step)
        return False

    def evaluate(self, loader: TensorLoader | None = None) -> tuple[float, float, float]:
        """Loss, top-1 and top-5 accuracy (%) on ``loader`` (default: the test batches)."""
        loader = loader or self.test_data
        self.net.eval()
        try:
            result = evaluate_classifier(self.net, loader.epoch(0), self.device, self.dist, amp=self.amp)
        finally:
            self.net.train()
        return result.loss, result.top1, result.top5

    def describe_epoch(self, m: dict) -> str:
        """One line: learning rate, train loss and accuracy, test figures when evaluated, time."""
        test = f"  test {m['test_loss']:.3f} / {m['test_acc']:5.2f}%" if "test_acc" in m else ""
        if "val_acc" in m:
            test = f"  val {m['val_loss']:.3f} / {m['val_acc']:5.2f}%" + test
        return (f"epoch {m['epoch']:>3}/{self.s.epochs}  lr {m['lr']:.4f}  "
                f"train {m['train_loss']:.3f} / {m['train_acc']:5.1f}%{test}  {m['epoch_time']:.1f}s")

    def summary(self, **extra) -> dict:
        """What ``final.json`` holds: test (and val) accuracy and what it was measured on, parameters, FLOPs, epoch times."""
        last = self.history[-1]
        shape = tuple(self.test_data.image_shape)
        val = {} if self.val_data is None else {
            "val_set": self.val_set, "val_images": self.val_data.labels.numel(),
            "val_acc": last.get("val_acc"), "val_loss": last.get("val_loss")}
        return {**extra, "test_set": self.test_set, "test_images": self.test_data.labels.numel(),
                "test_acc": last.get("test_acc"), "test_acc5": last.get("test_acc5"),
                "test_loss": last.get("test_loss"), **val, "epochs": self.s.epochs,
                "params": count_parameters(self.net, exclude="auxiliary_head"),
                "params_with_auxiliary": count_parameters(self.net),
                "flops": count_flops(self.net, shape), "input_shape": list(shape),
                "epoch_times": [m["epoch_time"] for m in self.history],
                "train_time": sum(m["epoch_time"] for m in self.history)}

    def write_summary(self, **extra) -> dict:
        """Writes ``final.json`` atomically and returns it."""
        record = self.summary(**extra)
        if self.out_dir is not None:
            text = json.dumps(record, indent=2) + "\n"
            atomic_write(self.out_dir / FINAL, lambda f: f.write(text), mode="w")
        return record

    def schedule_at(self, epoch: int) -> dict[str, float]:
        """The lr (and drop-path probability) at zero-based ``epoch`` under the current ``train.epochs``."""
        values = {"lr": self.scheduler._get_lr(epoch)[0]}  # what scheduler.step(epoch) will set
        if self.s.drop_path_prob > 0 and hasattr(self.net, "drop_path_prob"):
            values["drop_path_prob"] = self.s.drop_path_prob * epoch / self.s.epochs  # as train_epoch ramps it
        return values

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Weights, optimizer, schedule, position, metrics and RNG states."""
        return {"format": 1, "epoch": self.epoch, "step": self.step, "partial": self._partial,
                "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "metrics": self.history}

    def load_state_dict(self, state: dict) -> None:
        """Restores what ``state_dict`` returned."""
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scheduler.t_initial = self.s.epochs  # the cosine follows train.epochs, which a resume may change
        set_rng_state(state["rng"])
        self.epoch, self.step, self._partial = state["epoch"], state["step"], state["partial"]
        self.history = list(state["metrics"])
