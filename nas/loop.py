"""The epoch loop the search and the retraining share: position, run directory, checkpoints, resume, stops.

``Searcher`` (``nas.search``) and ``FinalTrainer`` (``nas.train``) differ in
what one epoch does; everything around the epochs is here, once:

* the position ``(epoch, step)`` and the partial sums of an epoch stopped
  mid-way, so a resumed run replays nothing and skips nothing;
* the run directory: ``metrics.jsonl`` (one line per epoch, rewritten to the
  checkpoint's epochs on resume) and ``checkpoint.pt`` (atomic, see
  ``nas.checkpoint``), written at every epoch end and, on request, mid-epoch;
* stop requests (SIGINT/SIGTERM through ``request_stop``) and step
  checkpoints (``checkpoint_every``), agreed across ranks by ``StopControl``.

A subclass implements ``train_epoch(epoch) -> metrics``, ``state_dict()``,
``load_state_dict(state)`` and ``describe_epoch(metrics)``, and inside its
epoch calls ``checkpoint_in_epoch`` after each step.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import DistContext, StopControl
from .errors import UserError

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


class RunInterrupted(Exception):
    """A stop was requested (SIGINT/SIGTERM); a checkpoint of the current step was written."""

    def __init__(self, signum: int, epoch: int, step: int):
        super().__init__(f"stopped by signal {signum} at epoch {epoch + 1}, step {step}")
        self.signum, self.epoch, self.step = signum, epoch, step


class RunDiverged(Exception):
    """A loss or gradient was not finite (and the loop was not told to skip such steps)."""


class EpochLoop:
    """Base class of the training loops: runs epochs and owns the run directory.

    Args:
        epochs: Epochs in the whole run.
        checkpoint_every: Also checkpoint every K steps inside an epoch (0: at epoch ends only).
        out_dir: Run directory; None writes nothing.
        log: Where epoch summaries go.
        dist: This process's place in a multi-process run.
    """

    checkpoint_key = "model"      # a key only this loop's checkpoints hold
    wrong_checkpoint = "was not written by this loop"
    divergence_hint = "lower the learning rate"

    def __init__(self, epochs: int, checkpoint_every: int = 0, out_dir: str | Path | None = None,
                 log: Callable[[str], None] = print, dist: DistContext | None = None):
        self.epochs = epochs
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.log = log
        self.dist = dist or DistContext()
        self.control = StopControl(checkpoint_every, self.dist)
        self.epoch = 0          # epochs completed
        self.step = 0           # steps completed inside the current epoch
        self.history: list[dict] = []
        self.epoch_hooks: list[Callable[[dict], None]] = []  # called with each epoch's metrics (TensorBoard, ...)
        self._partial: dict | None = None  # running sums of an epoch resumed (or checkpointed) mid-way

    # ----------------------------------------------------------------- implemented by subclasses
    def train_epoch(self, epoch: int) -> dict:
        """Runs (the rest of) one epoch and returns its metrics."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Everything needed to continue (``epoch``, ``step`` and ``partial`` included)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        """Restores what ``state_dict`` returned."""
        raise NotImplementedError

    def describe_epoch(self, metrics: dict) -> str:
        """The epoch's log line(s)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- the loop
    def request_stop(self, signum: int) -> None:
        """Asks the loop to checkpoint and stop after the current step (signal-handler safe)."""
        self.control.request(signum)

    def run(self, until_epoch: int | None = None) -> dict:
        """Runs epochs from the current position to ``until_epoch`` (default: the last); returns the last metrics."""
        stop = self.epochs if until_epoch is None else min(until_epoch, self.epochs)
        while self.epoch < stop:
            metrics = self.train_epoch(self.epoch)
            self.epoch += 1
            self.history.append(metrics)
            self.log(self.describe_epoch(metrics))
            self._write(metrics)
            for hook in self.epoch_hooks:
                hook(metrics)
        return self.history[-1] if self.history else {}

    def checkpoint_in_epoch(self, epoch: int, steps_per_epoch: int, device: torch.device,
                            diverged: Callable[[], bool], partial: Callable[[], dict], bar=None) -> None:
        """After a step: checkpoints mid-epoch when a stop or a step checkpoint is due.

        Args:
            epoch: The current epoch.
            steps_per_epoch: Steps in a full epoch.
            device: Where the stop flag is agreed across ranks.
            diverged: True when a step since the last check was not finite (never checkpointed).
            partial: The epoch's running sums so far (plain numbers, stored in the checkpoint).
            bar: A progress bar to close before stopping.

        Raises:
            RunDiverged: a non-finite step is pending.
            RunInterrupted: a stop was requested (after the checkpoint is written).
        """
        stop, every = self.control.check(self.step, steps_per_epoch, device)
        if not (stop or every):
            return
        if diverged():
            raise self.diverged(epoch, self.step - 1)
        self._partial = partial()
        self._save_checkpoint()
        self._partial = None
        if stop:
            if bar is not None:
                bar.close()
            raise RunInterrupted(self.control.signal, epoch, self.step)

    def diverged(self, epoch: int, step: int | None = None) -> RunDiverged:
        """The error for a non-finite step, naming where and the last good checkpoint."""
        where = f"epoch {epoch + 1}" if step is None else f"epoch {epoch + 1}, step {step}"
        if self.out_dir is not None and (self.out_dir / CHECKPOINT).exists():
            last = f"the last good checkpoint is {self.out_dir / CHECKPOINT} (resume with --resume {self.out_dir})"
        else:
            last = "no checkpoint was written yet"
        return RunDiverged(f"non-finite loss or gradient at {where}; {last}; {self.divergence_hint}")

    # ----------------------------------------------------------------- files
    def _write(self, metrics: dict) -> None:
        """Appends the epoch's metrics line, writes the loop's other files, checkpoints."""
        if self.out_dir is None:
            return
        with open(self.out_dir / METRICS, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        self._write_files()
        self._save_checkpoint()

    def _write_files(self) -> None:
        """Files a loop writes at each epoch end besides metrics and checkpoint (none by default)."""

    def _save_checkpoint(self) -> None:
        if self.out_dir is not None:
            save_checkpoint(self.out_dir / CHECKPOINT, self.state_dict())

    def resume(self, checkpoint: str | Path) -> None:
        """Continues from a checkpoint; rewrites the metrics file to the epochs it covers.

        Raises:
            UserError: the checkpoint belongs to the other loop or does not fit this model.
        """
        state = load_checkpoint(checkpoint)
        if self.checkpoint_key not in state:
            raise UserError(f"{str(checkpoint)!r} {self.wrong_checkpoint}")
        try:
            self.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as e:
            raise UserError(f"checkpoint {str(checkpoint)!r} does not fit this model "
                            f"({str(e).splitlines()[0][:120]})") from None
        if self.out_dir is not None:
            for torn in self.out_dir.glob(".*.tmp"):  # a write cut short by SIGKILL
                torn.unlink()
            with open(self.out_dir / METRICS, "w") as f:
                f.writelines(json.dumps(m) + "\n" for m in self.history)
