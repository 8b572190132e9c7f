"""The epoch loop the search and the retraining share: position, run directory, checkpoints, resume, stops.

``Searcher`` (``nas.engine.search``) and ``FinalTrainer`` (``nas.engine.train``) differ in
what one epoch does; everything around the epochs is here, once:

* the position ``(epoch, step)`` and the partial sums of an epoch stopped
  mid-way, so a resumed run replays nothing and skips nothing;
* the run directory: ``metrics.jsonl`` (one line per epoch, rewritten to the
  checkpoint's epochs on resume) and ``checkpoint.pt`` (atomic, see
  ``nas.engine.checkpoint``), written at every epoch end and, on request, mid-epoch;
* stop requests (SIGINT/SIGTERM through ``request_stop``) and step
  checkpoints (``checkpoint_every``), agreed across ranks by ``StopControl``;
* the non-finite rule: a non-finite loss, gradient, weight (parameter or
  buffer) or epoch metric is divergence; nothing non-finite is ever written
  to ``metrics.jsonl`` (strict JSON) or checkpointed;
* what a checkpoint must hold to be resumed: a position that fits the run, the
  resolved config it was written under (``run_config``), finite weights.

A subclass implements ``train_epoch(epoch) -> metrics``, ``state_dict()``,
``load_state_dict(state)``, ``describe_epoch(metrics)``, ``network()`` and
``steps_per_epoch()``, and inside its epoch calls ``checkpoint_in_epoch`` after
each step.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from tqdm import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from ..utils.atomic import remove_torn_writes
from .distributed import DistContext, StopControl
from .epoch_sums import EpochSums
from ..utils.errors import UserError
from ..utils.yamlio import brief, flatten

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


def cosine_scheduler(optimizer: torch.optim.Optimizer, epochs: int, lr_min: float):
    """timm's per-epoch cosine schedule from the optimizer's lr to ``lr_min`` over ``epochs``.

    With one epoch timm logs that the schedule has no effect, which is expected
    (the single epoch runs at the initial lr); that line is kept off stderr.
    """
    from timm.scheduler import CosineLRScheduler

    logger = logging.getLogger("timm.scheduler.cosine_lr")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return CosineLRScheduler(optimizer, t_initial=epochs, lr_min=lr_min, t_in_epochs=True)
    finally:
        logger.setLevel(level)


class RunInterrupted(Exception):
    """A stop was requested (SIGINT/SIGTERM); a checkpoint of the current step was written."""

    def __init__(self, signum: int, epoch: int, step: int):
        super().__init__(f"stopped by signal {signum} at epoch {epoch + 1}, step {step}")
        self.signum, self.epoch, self.step = signum, epoch, step

    def __reduce__(self):  # rebuilt from its fields: a worker process hands it back to the experiment
        return type(self), (self.signum, self.epoch, self.step)


class RunDiverged(Exception):
    """A loss, gradient, weight or metric was not finite (and the loop was not told to skip such steps)."""


class RunWriteFailed(UserError):
    """A run-directory file could not be written (disk full, file too large, ...); the last checkpoint is intact."""


def _nonfinite_numbers(value: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the non-finite floats inside nested dicts/lists of metrics."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [prefix or "value"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nonfinite_numbers(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _nonfinite_numbers(v, f"{prefix}[{i}]")]
    return []


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
    divergence_hint = "lower {key}"  # {key}: the config key blamed (``divergence_key``) with its value
    epochs_key = ""  # the config key of ``epochs``: a resumed run may change it (extend or shorten the run)

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
        self.run_config: dict | None = None  # the resolved config (``Config.to_dict()``), stored in checkpoints
        self.extended_from: int | None = None  # the epochs a resumed checkpoint was planned for, if not ``epochs``

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

    def schedule_at(self, epoch: int) -> dict[str, float]:
        """The values of the epoch-based schedules at zero-based ``epoch`` (named as in the epoch metrics)."""
        return {}

    def network(self) -> torch.nn.Module:
        """The module whose parameters and buffers must stay finite."""
        raise NotImplementedError

    def steps_per_epoch(self) -> int:
        """Steps in a full epoch (bounds a checkpoint's ``step``)."""
        raise NotImplementedError

    def divergence_key(self, nonfinite: list[str], flags: int = 0) -> str:
        """The config key (``key (value)``) to blame; ``nonfinite``: names of non-finite weights, ``flags``: loop-defined."""
        return "the learning rate"

    # ----------------------------------------------------------------- shared by the loops' epochs
    def epoch_sums(self, sums: tuple[str, ...], counts: tuple[str, ...], device: torch.device) -> EpochSums:
        """This epoch's running sums, starting from the interrupted part when the epoch resumes mid-way."""
        partial, self._partial = self._partial, None
        return EpochSums(sums, counts, device, partial)

    def progress_bar(self, batches: Iterable, epoch: int, total: int, show: bool):
        """A progress bar over the rest of the epoch (``self.step`` batches are already done); shown on a terminal."""
        return tqdm(batches, total=total, initial=self.step, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False,
                    disable=not (show and sys.stderr.isatty()))

    # ----------------------------------------------------------------- the loop
    def request_stop(self, signum: int) -> None:
        """Asks the loop to checkpoint and stop after the current step (signal-handler safe)."""
        self.control.request(signum)

    def run(self, until_epoch: int | None = None) -> dict:
        """Runs epochs from the current position to ``until_epoch`` (default: the last); returns the last metrics."""
        stop = self.epochs if until_epoch is None else min(until_epoch, self.epochs)
        while self.epoch < stop:
            metrics = self.train_epoch(self.epoch)
            self._check_finite(self.epoch, metrics)
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
        bad = self.nonfinite_weights()  # an update can overflow after its step's gradient check
        if bad:
            raise self.diverged(epoch, self.step - 1, what=f"weights ({_names(bad)})")
        self._partial = partial()
        self._save_checkpoint()
        self._partial = None
        if stop:
            if bar is not None:
                bar.close()
            raise RunInterrupted(self.control.signal, epoch, self.step)

    def diverged(self, epoch: int, step: int | None = None, what: str = "loss or gradient",
                 flags: int = 0) -> RunDiverged:
        """The error for a non-finite step or epoch, naming where, the key to blame and the last good checkpoint.

        Args:
            epoch: The epoch (0-based).
            step: The step inside it (None: the epoch as a whole).
            what: What was not finite.
            flags: Loop-defined hints for ``divergence_key`` (which step of an iteration failed).
        """
        where = f"epoch {epoch + 1}" if step is None else f"epoch {epoch + 1}, step {step}"
        if self.out_dir is not None and (self.out_dir / CHECKPOINT).exists():
            last = f"the last good checkpoint is {self.out_dir / CHECKPOINT} (resume with --resume {self.out_dir})"
        else:
            last = "no checkpoint was written yet"
        hint = self.divergence_hint.format(key=self.divergence_key(self.nonfinite_weights(), flags))
        return RunDiverged(f"non-finite {what} at {where}; {last}; {hint}")

    def nonfinite_weights(self) -> list[str]:
        """Names of the network's parameters and floating buffers holding a NaN or inf (one sync when none)."""
        tensors = {n: t for n, t in self.network().state_dict().items() if t.is_floating_point()}
        if not tensors:
            return []
        finite = torch.stack([torch.isfinite(t).all() for t in tensors.values()])
        if bool(finite.all()):
            return []
        return [n for n, ok in zip(tensors, finite.tolist()) if not ok]

    def _check_finite(self, epoch: int, metrics: dict) -> None:
        """Divergence unless the epoch's weights and metrics are finite (checked before anything is written)."""
        bad = self.nonfinite_weights()
        if bad:
            raise self.diverged(epoch, self.steps_per_epoch() - 1, what=f"weights ({_names(bad)})")
        numbers = _nonfinite_numbers(metrics)
        if numbers:
            raise self.diverged(epoch, what=f"metric ({_names(numbers)})")

    # ----------------------------------------------------------------- files
    def _write(self, metrics: dict) -> None:
        """Appends the epoch's metrics line, writes the loop's other files, checkpoints.

        A failed write (disk full, file too large) takes the metrics file back to
        its previous length and is one ``RunWriteFailed`` line; the previous
        checkpoint stays as it was.
        """
        if self.out_dir is None:
            return
        path = self.out_dir / METRICS
        size = path.stat().st_size if path.exists() else 0
        line = json.dumps(metrics, allow_nan=False) + "\n"  # strict JSON (finite numbers, checked before)
        try:
            with self._writing(METRICS):
                with open(path, "a") as f:
                    f.write(line)
            self._write_files()
            self._save_checkpoint()
        except RunWriteFailed:
            try:
                with open(path, "r+") as f:
                    f.truncate(size)
            except OSError:
                pass
            raise

    def _write_files(self) -> None:
        """Files a loop writes at each epoch end besides metrics and checkpoint (none by default)."""

    @contextlib.contextmanager
    def _writing(self, name: str):
        """Turns an ``OSError`` while writing ``name`` into one ``RunWriteFailed`` line."""
        try:
            yield
        except OSError as e:
            if (self.out_dir / CHECKPOINT).exists():
                kept = f"the previous checkpoint {self.out_dir / CHECKPOINT} is intact (resume with --resume {self.out_dir})"
            else:
                kept = "no checkpoint was written yet"
            reason = e.strerror or type(e).__name__
            raise RunWriteFailed(f"cannot write {self.out_dir / name} ({reason}); {kept}; "
                                 "free disk space (or raise the file size limit) first") from None

    def _save_checkpoint(self) -> None:
        if self.out_dir is not None:
            state = self.state_dict()
            if self.run_config is not None:
                state["config"] = self.run_config
            with self._writing(CHECKPOINT):
                save_checkpoint(self.out_dir / CHECKPOINT, state)

    def resume(self, checkpoint: str | Path) -> None:
        """Continues from a checkpoint; rewrites the metrics file to the epochs it covers.

        Raises:
            UserError: the checkpoint belongs to the other loop, to a run with
                another config, holds a position or fields that do not fit, or
                non-finite weights.
        """
        state = load_checkpoint(checkpoint)
        if self.checkpoint_key not in state:
            raise UserError(f"{str(checkpoint)!r} {self.wrong_checkpoint}")
        self._check_config(state, checkpoint)
        done = state.get("epoch")
        if self.extended_from is not None and type(done) is int and done > self.epochs:
            raise UserError(f"{str(checkpoint)!r} has completed {done} epochs; {self.epochs_key} must be at least "
                            f"{done} to continue it, got {self.epochs}")
        self._check_position(state, checkpoint)
        try:
            self.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"checkpoint {str(checkpoint)!r} does not fit this model or is damaged "
                            f"({first[:120]}); start a new run or restore the file") from None
        bad = self.nonfinite_weights()
        if bad:
            raise UserError(f"checkpoint {str(checkpoint)!r} holds non-finite weights ({_names(bad)}); "
                            "it cannot be resumed: start a new run")
        if self.out_dir is not None:
            remove_torn_writes(self.out_dir)  # a write cut short by SIGKILL
            with self._writing(METRICS):
                with open(self.out_dir / METRICS, "w") as f:
                    f.writelines(json.dumps(m, allow_nan=False) + "\n" for m in self.history)

    def _check_config(self, state: dict, checkpoint) -> None:
        """Refuses a checkpoint written under another resolved config (seed, learning rate, batch size, ...)."""
        if self.run_config is None:
            return
        saved = state.get("config")
        if not isinstance(saved, dict):
            raise UserError(f"checkpoint {str(checkpoint)!r} does not record the config it was written under; "
                            "it cannot be checked against this run: start a new run")
        mine, theirs = flatten(self.run_config), flatten(saved)
        changed = sorted(k for k in mine if k in theirs and mine[k] != theirs[k])
        if self.epochs_key in changed:  # a run extended (or shortened): its schedules are re-planned
            changed.remove(self.epochs_key)
            if type(theirs[self.epochs_key]) is int:
                self.extended_from = theirs[self.epochs_key]
        if changed:
            raise UserError(f"checkpoint {str(checkpoint)!r} was written by a run with another config "
                            f"({_names(changed)} differ); resume it with its own config.yaml or start a new run")

    def replan_notice(self) -> str | None:
        """After resuming with another ``epochs``: one line saying how the schedules change (None otherwise).

        Every schedule over the epochs (the cosine lr, the Gumbel temperature, ...) is a
        function of ``(epoch, epochs)``, so with the new ``epochs`` it is re-planned as if
        the run had had that length from the start; the epochs already run keep their values.
        """
        if self.extended_from is None:
            return None
        head = f"{self.epochs_key} {self.extended_from} -> {self.epochs}"
        if self.epoch >= self.epochs:
            return f"{head}: all {self.epochs} epochs are already done"
        now = self.schedule_at(self.epoch)
        then = self.history[-1] if self.history else {}
        values = ", ".join(f"{k} {v:.4g}" + (f" (epoch {self.epoch} ran at {then[k]:.4g})" if k in then else "")
                           for k, v in now.items())
        return (f"{head}: the schedules ({', '.join(now) or 'none'}) are re-planned over {self.epochs} epochs, as "
                f"if the run had been {self.epochs} epochs long from the start; epoch {self.epoch + 1} runs at "
                f"{values}")

    def _check_position(self, state: dict, checkpoint) -> None:
        """Type and range checks of the fields every checkpoint holds (a hand-made one is one line, not a traceback)."""
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise UserError(f"checkpoint {str(checkpoint)!r} is damaged: {what}; start a new run or restore the file")
        epoch, step, partial, metrics = (state.get("epoch"), state.get("step", 0), state.get("partial"),
                                         state.get("metrics"))
        need(type(epoch) is int and 0 <= epoch <= self.epochs,
             f"'epoch' must be an integer in [0, {self.epochs}], got {brief(epoch)}")
        steps = self.steps_per_epoch() if epoch < self.epochs else 0
        need(type(step) is int and 0 <= step <= max(steps - 1, 0),
             f"'step' must be an integer in [0, {max(steps - 1, 0)}], got {brief(step)}")
        need(partial is None or (isinstance(partial, dict) and all(
             isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in partial.values())),
             f"'partial' must be a mapping of finite numbers, got {brief(partial)}")
        need(isinstance(metrics, list) and len(metrics) == epoch and all(isinstance(m, dict) for m in metrics)
             and not _nonfinite_numbers(metrics),
             f"'metrics' must be {epoch} finite epoch records, got {brief(metrics)}")


def _names(names: list[str], shown: int = 3) -> str:
    """``a, b, c and 4 more``: a short list of names for an error line."""
    text = ", ".join(brief(n)[1:-1] if isinstance(n, str) else brief(n) for n in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")
