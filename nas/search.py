"""The search loop: weight steps, architecture steps, schedules, metrics and checkpoints.

One epoch (bilevel, as GDAS):
    for each train batch (x_t, y_t) and the next val batch (x_v, y_v):
        weight step: sample an architecture, CE(x_t), SGD on the weights only
        arch step:   sample an architecture, CE(x_v), Adam on the logits only
Single level (SNAS): one sample and one backward on the train batch update both.

The loop sees the supernet only through ``arch_parameters()``,
``weight_parameters()``, ``forward`` and ``architecture``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.scheduler import CosineLRScheduler
from tqdm import tqdm

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import SearchConfig
from .data import SearchData, TensorLoader
from .genotype import genotype_record, save_genotype
from .gumbel import tau_at
from .space import SearchSpace
from .supernet import Supernet

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
GENOTYPE = "genotype.yaml"


def build_optimizers(supernet: Supernet, s: SearchConfig):
    """SGD on the weights (never the logits), Adam on the logits, cosine schedule for the weights."""
    weight_opt = torch.optim.SGD(supernet.weight_parameters(), lr=s.lr, momentum=s.momentum,
                                 nesterov=s.nesterov and s.momentum > 0, weight_decay=s.weight_decay)
    arch_opt = torch.optim.Adam(supernet.arch_parameters(), lr=s.arch_lr, betas=tuple(s.arch_betas),
                                weight_decay=s.arch_weight_decay)
    scheduler = CosineLRScheduler(weight_opt, t_initial=s.epochs, lr_min=s.lr_min, t_in_epochs=True)
    return weight_opt, arch_opt, scheduler


class Searcher:
    """Runs a search and owns its run directory.

    Args:
        supernet: The supernet, already on ``device``.
        space: Its search space (for deriving and formatting genotypes).
        data: Loaders for the weight and arch steps and for evaluation.
        settings: Loop hyper-parameters (a ``SearchConfig``; its defaults are GDAS's).
        seed: Seeds the Gumbel sampler's generator.
        out_dir: Run directory (checkpoint, metrics, genotype); None writes nothing.
        log: Where epoch summaries go (``print`` by default).
    """

    def __init__(self, supernet: Supernet, space: SearchSpace, data: SearchData,
                 settings: SearchConfig | None = None, seed: int = 0, out_dir: str | Path | None = None,
                 log: Callable[[str], None] = print):
        settings = settings or SearchConfig()
        self.supernet, self.space, self.data, self.s = supernet, space, data, settings
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.log = log
        self.weight_params = supernet.weight_parameters()
        self.arch_params = supernet.arch_parameters()
        self.weight_opt, self.arch_opt, self.scheduler = build_optimizers(supernet, settings)
        self.epoch = 0          # epochs completed
        self.history: list[dict] = []
        self._frozen: str | None = None
        supernet.architecture.seed(seed)

    # ----------------------------------------------------------------- steps
    def _freeze(self, which: str) -> None:
        """Turns off gradients of the weights (``weights``) or of the logits (``arch``) or neither."""
        if which == self._frozen:
            return
        for p in self.weight_params:
            p.requires_grad_(which != "weights")
        for p in self.arch_params:
            p.requires_grad_(which != "arch")
        self._frozen = which

    def _clip(self) -> None:
        if self.s.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.weight_params, self.s.grad_clip)

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step on the weights under a fresh sample; returns (loss, correct) as tensors."""
        self._freeze("arch")
        logits = self.supernet(x)
        loss = F.cross_entropy(logits, y)
        self.weight_opt.zero_grad(set_to_none=True)
        loss.backward()
        self._clip()
        self.weight_opt.step()
        return loss.detach(), (logits.argmax(1) == y).sum()

    def arch_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One Adam step on the logits under a fresh sample; weights get no gradient."""
        self._freeze("weights")
        logits = self.supernet(x)
        loss = F.cross_entropy(logits, y)
        self.arch_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.arch_opt.step()
        return loss.detach(), (logits.argmax(1) == y).sum()

    def joint_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Single level (SNAS): one sample, one backward, both optimizers step."""
        self._freeze("none")
        logits = self.supernet(x)
        loss = F.cross_entropy(logits, y)
        self.weight_opt.zero_grad(set_to_none=True)
        self.arch_opt.zero_grad(set_to_none=True)
        loss.backward()
        self._clip()
        self.weight_opt.step()
        self.arch_opt.step()
        return loss.detach(), (logits.argmax(1) == y).sum()

    @torch.no_grad()
    def evaluate(self, loader: TensorLoader) -> tuple[float, float]:
        """Loss and accuracy (%) of the derived architecture (eval mode) over a loader."""
        self.supernet.eval()
        loss_sum = torch.zeros((), device=loader.device)
        correct = torch.zeros((), device=loader.device, dtype=torch.long)
        n = 0
        for x, y in loader.epoch(0):
            logits = self.supernet(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            n += y.numel()
        self.supernet.train()
        return loss_sum.item() / n, 100.0 * correct.item() / n

    # ----------------------------------------------------------------- epochs
    def train_epoch(self, epoch: int) -> dict:
        """Runs one epoch and returns its metrics."""
        s = self.s
        start = time.perf_counter()
        tau = tau_at(s.tau_schedule, epoch, s.epochs, s.tau_max, s.tau_min)
        self.supernet.tau = tau
        self.scheduler.step(epoch)
        self.supernet.train()
        search_arch = epoch >= s.warmup_epochs
        device = self.data.train.device
        sums = {k: torch.zeros((), device=device) for k in ("loss", "correct", "arch_loss", "arch_correct")}
        seen = arch_seen = 0
        val_batches = self.data.val.cycle(epoch)  # one persistent iterator per epoch
        bar = tqdm(self.data.train.epoch(epoch), total=len(self.data.train), desc=f"epoch {epoch + 1}/{s.epochs}",
                   leave=False, disable=not (s.progress and sys.stderr.isatty()))
        for x, y in bar:
            if search_arch and not s.bilevel:
                loss, correct = self.joint_step(x, y)
            else:
                loss, correct = self.weight_step(x, y)
            sums["loss"] += loss * y.numel()
            sums["correct"] += correct
            seen += y.numel()
            if search_arch and s.bilevel:
                xv, yv = next(val_batches)
                arch_loss, arch_correct = self.arch_step(xv, yv)
                sums["arch_loss"] += arch_loss * yv.numel()
                sums["arch_correct"] += arch_correct
                arch_seen += yv.numel()
        bar.close()
        totals = {k: v.item() for k, v in sums.items()}  # the epoch's one sync for the running sums
        probs = self.supernet.architecture.probabilities()
        entropy = self.supernet.architecture.entropy()
        genotype = self.space.derive_genotype(probs)
        metrics: dict[str, Any] = {
            "epoch": epoch + 1, "tau": tau, "lr": self.weight_opt.param_groups[0]["lr"],
            "train_loss": totals["loss"] / seen, "train_acc": 100.0 * totals["correct"] / seen,
        }
        if arch_seen:
            metrics["arch_loss"] = totals["arch_loss"] / arch_seen
            metrics["arch_acc"] = 100.0 * totals["arch_correct"] / arch_seen
        last = epoch + 1 == s.epochs
        if last or (s.eval_every and (epoch + 1) % s.eval_every == 0):
            metrics["val_loss"], metrics["val_acc"] = self.evaluate(self.data.val_eval)
        metrics["genotype"] = self.space.format(genotype)
        metrics["probabilities"] = {g: [[round(v, 5) for v in row] for row in p.tolist()] for g, p in probs.items()}
        metrics["entropy"] = {g: [round(v, 5) for v in e.tolist()] for g, e in entropy.items()}
        metrics["epoch_time"] = time.perf_counter() - start
        return metrics

    def run(self, until_epoch: int | None = None) -> dict:
        """Runs epochs from the current one to ``until_epoch`` (default: the last) and returns the final metrics."""
        stop = self.s.epochs if until_epoch is None else min(until_epoch, self.s.epochs)
        while self.epoch < stop:
            metrics = self.train_epoch(self.epoch)
            self.epoch += 1
            self.history.append(metrics)
            self._log_epoch(metrics)
            self._write(metrics)
        return self.history[-1] if self.history else {}

    def _log_epoch(self, m: dict) -> None:
        parts = [f"epoch {m['epoch']:>3}/{self.s.epochs}", f"tau {m['tau']:.3f}",
                 f"train {m['train_loss']:.3f} / {m['train_acc']:5.1f}%"]
        if "arch_acc" in m:
            parts.append(f"arch {m['arch_loss']:.3f} / {m['arch_acc']:5.1f}%")
        if "val_acc" in m:
            parts.append(f"val {m['val_loss']:.3f} / {m['val_acc']:5.1f}%")
        mean_entropy = sum(sum(e) for e in m["entropy"].values()) / sum(len(e) for e in m["entropy"].values())
        parts += [f"entropy {mean_entropy:.3f}", f"{m['epoch_time']:.1f}s"]
        self.log("  ".join(parts) + f"\n    {m['genotype']}")

    # ----------------------------------------------------------------- state
    def genotype_record(self) -> dict:
        """The current derived genotype with probabilities, as written to ``genotype.yaml``."""
        probs = self.supernet.architecture.probabilities()
        return genotype_record(self.space, self.space.derive_genotype(probs), probs,
                               mode=self.supernet.mode, epoch=self.epoch)

    def state_dict(self) -> dict:
        """Everything needed to continue: weights, logits, optimizers, schedule, RNG states, metrics."""
        return {
            "format": 1, "epoch": self.epoch, "tau": self.supernet.tau,
            "model": self.supernet.state_dict(),
            "weight_optimizer": self.weight_opt.state_dict(), "arch_optimizer": self.arch_opt.state_dict(),
            "weight_scheduler": self.scheduler.state_dict(),
            "gumbel_generator": self.supernet.architecture.generator.get_state(),
            "rng": rng_state(), "metrics": self.history,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restores what ``state_dict`` returned."""
        self.supernet.load_state_dict(state["model"])
        self.weight_opt.load_state_dict(state["weight_optimizer"])
        self.arch_opt.load_state_dict(state["arch_optimizer"])
        self.scheduler.load_state_dict(state["weight_scheduler"])
        self.supernet.architecture.generator.set_state(state["gumbel_generator"])
        set_rng_state(state["rng"])
        self.epoch, self.supernet.tau, self.history = state["epoch"], state["tau"], list(state["metrics"])

    def resume(self, checkpoint: str | Path) -> None:
        """Loads a checkpoint and rewrites the metrics file to the epochs it covers."""
        self.load_state_dict(load_checkpoint(checkpoint))
        if self.out_dir is not None:
            with open(self.out_dir / METRICS, "w") as f:
                f.writelines(json.dumps(m) + "\n" for m in self.history)

    def _write(self, metrics: dict) -> None:
        if self.out_dir is None:
            return
        with open(self.out_dir / METRICS, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        save_genotype(self.out_dir / GENOTYPE, self.genotype_record())
        save_checkpoint(self.out_dir / CHECKPOINT, self.state_dict())
