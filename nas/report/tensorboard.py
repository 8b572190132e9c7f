"""TensorBoard logging of a search's per-epoch metrics (optional: ``pip install tensorboard``).

Tags written at step = epoch:

* ``loss/{train,arch,val}``, ``accuracy/{train,arch,val}``: whichever the epoch has
  (``val``: the derived genotype on the supernet weights; ``val_supernet``: the soft
  supernet, snas/darts modes); ``cost/derived``: the derived genotype's cost;
* ``schedule/tau``, ``schedule/lr``, ``time/epoch_time``;
* ``entropy/mean`` (over every edge of every group) and ``entropy/<group>``;
* ``probabilities/<group>/<edge>/<op>``: one scalar per op of every edge;
* the derived genotype as text (``genotype``).

tensorboard is imported only when a logger is created, so the package works
without it; a missing install raises ``TensorBoardUnavailable`` (an
``ImportError``) that names the command to fix it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

INSTALL_HINT = "pip install tensorboard"

# metrics.jsonl key -> TensorBoard tag.
SCALAR_TAGS = {
    "train_loss": "loss/train", "arch_loss": "loss/arch", "val_loss": "loss/val",
    "train_acc": "accuracy/train", "arch_acc": "accuracy/arch", "val_acc": "accuracy/val",
    "supernet_val_loss": "loss/val_supernet", "supernet_val_acc": "accuracy/val_supernet",
    "derived_cost": "cost/derived", "tau": "schedule/tau", "lr": "schedule/lr", "epoch_time": "time/epoch_time",
}


class TensorBoardUnavailable(ImportError):
    """The tensorboard package is not installed; the message says how to install it."""


def _summary_writer_class():
    try:
        import tensorboard  # noqa: F401  (torch's import error does not name the package to install)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise TensorBoardUnavailable(f"TensorBoard logging needs the tensorboard package, which is not "
                                     f"installed: {INSTALL_HINT} (or pip install -e \".[tensorboard]\")") from e
    return SummaryWriter


class TensorBoardLogger:
    """Writes one search epoch at a time to a TensorBoard event file.

    Args:
        log_dir: Directory of the event files (created if missing).
        edge_names: group -> edge names in logit row order (``space.edge_names()``).
        op_names: Op names in logit column order (``space.op_names``).

    Raises:
        TensorBoardUnavailable: if tensorboard is not installed.

    Example:
        >>> logger = TensorBoardLogger(run_dir / "tensorboard", space.edge_names(), space.op_names)
        >>> logger.log_epoch(metrics)   # once per epoch, the dict written to metrics.jsonl
        >>> logger.close()
    """

    def __init__(self, log_dir: str | Path, edge_names: dict[str, list[str]], op_names: list[str] | tuple[str, ...]):
        SummaryWriter = _summary_writer_class()
        self.log_dir = Path(log_dir)
        self.edge_names = {group: list(names) for group, names in edge_names.items()}
        self.op_names = list(op_names)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_epoch(self, metrics: dict[str, Any]) -> None:
        """Writes one epoch's metrics (the dict of a ``metrics.jsonl`` line), at step ``metrics['epoch']``.

        Missing keys are skipped (``val_*`` is not every epoch, ``arch_*`` not
        during warm-up). Probabilities of a group or edge this logger was not
        told about are written under numbered names rather than dropped.
        """
        if self._writer is None:
            raise RuntimeError("TensorBoardLogger.log_epoch after close()")
        step = int(metrics["epoch"])
        write = self._writer.add_scalar
        for key, tag in SCALAR_TAGS.items():
            if metrics.get(key) is not None:
                write(tag, float(metrics[key]), step)
        entropy = metrics.get("entropy") or {}
        all_edges = [float(e) for values in entropy.values() for e in values]
        if all_edges:
            write("entropy/mean", sum(all_edges) / len(all_edges), step)
        for group, values in entropy.items():
            if values:
                write(f"entropy/{group}", sum(values) / len(values), step)
        for group, rows in (metrics.get("probabilities") or {}).items():
            edges = self.edge_names.get(group, [])
            for e, row in enumerate(rows):
                edge = edges[e] if e < len(edges) else f"edge{e}"
                for k, p in enumerate(row):
                    op = self.op_names[k] if k < len(self.op_names) else f"op{k}"
                    write(f"probabilities/{group}/{edge}/{op}", float(p), step)
        if metrics.get("genotype"):
            self._writer.add_text("genotype", f"`{metrics['genotype']}`", step)
        self._writer.flush()  # a running search is watched live: do not wait for the buffer

    def close(self) -> None:
        """Flushes and closes the event file; further ``close`` calls do nothing."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "TensorBoardLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
