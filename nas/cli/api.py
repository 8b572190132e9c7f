"""The Python entry points of a search and a retraining: ``nas.run_search`` and ``nas.run_retrain``.

(``nas.search`` is the 0.1 path of ``nas.engine.search``, kept for one release.)

They do what ``train_search.py`` and ``train_final.py`` do (the same config, run
directory and files) without the command-line layer's signal handling, report
or exit statuses: a bad input raises ``UserError``.

>>> import nas
>>> final = nas.run_search(["model.space=examples.chain_space:ChainSpace", "data.dataset=synthetic"],
...                    config="configs/quickstart.yaml", out="runs/chain")
>>> record = nas.run_retrain("runs/chain/genotype.yaml", ["data.dataset=synthetic"], out="runs/chain-final")
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from ..config import load_config
from ..engine.loop import CHECKPOINT
from ..spaces.genotype import GENOTYPE
from .build import build_final_trainer, build_searcher
from .run_command import open_run_dir


def _out(out: str | Path | None, kind: str) -> Path:
    path = Path(out) if out else Path("runs") / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (path / CHECKPOINT).exists():
        from ..utils.errors import UserError
        raise UserError(f"{str(path)!r} already holds a run; choose another out")
    return path


def run_search(overrides: Sequence[str] = (), config: str | Path | None = None, out: str | Path | None = None,
           log: Callable[[str], None] = print) -> dict:
    """Runs a search and returns its final record (``genotype``, ``val_acc``, ...).

    Args:
        overrides: ``key=value`` settings, as on the command line (``model.space=pkg.mod:Net``).
        config: A YAML config file (None: the defaults of ``nas.config``, a full 250-epoch search).
        out: The run directory (None: ``runs/search-<date>-<time>``); it receives ``genotype.yaml``.
        log: Where progress lines go.
    """
    import search_spaces  # noqa: F401  (registers the built-in spaces)

    cfg = load_config(config, overrides)
    out = _out(out, "search")
    searcher = build_searcher(cfg, log=log)  # every bad input fails here, before anything is written
    open_run_dir(out, cfg, resume=False, checkpoint=CHECKPOINT)
    searcher.out_dir = out
    return searcher.run()


def run_retrain(genotype: str | Path, overrides: Sequence[str] = (), config: str | Path | None = None,
            out: str | Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Trains a genotype file's network from scratch and returns ``final.json``'s record (``test_acc``, ...).

    Args:
        genotype: ``genotype.yaml`` of a search.
        overrides, config, log: As ``run_search``; ``train.*`` keys set the training.
        out: The run directory (None: ``runs/final-<date>-<time>``).
    """
    import search_spaces  # noqa: F401  (registers the built-in spaces)

    cfg = load_config(config, overrides)
    out = _out(out, "final")
    trainer, space, found = build_final_trainer(cfg, genotype, log=log)
    open_run_dir(out, cfg, resume=False, checkpoint=CHECKPOINT)
    shutil.copyfile(genotype, out / GENOTYPE)
    trainer.out_dir = out
    trainer.run()
    return trainer.write_summary(space=space.name, genotype=space.format(found), dataset=cfg.data.dataset)
