"""The experiment's plan: its cells (searched, random, none-free random) and the jobs that score them.

``plan_experiment`` checks the options, draws the random cells and lists every
job in serial order (a search, then its cell's retrainings; then the random
cells'; last, each finished supernet scoring every cell). Nothing runs here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import load_config
from ..spaces.genotype import GENOTYPE
from ..utils.errors import UserError
from ..utils.limits import MAX_SEED
from .cell_jobs import BENCHMARK, RETRAIN, job_done, random_cells_can_hold_none, write_random_genotypes
from .jobs import Job

DEFAULT_VAL_SPLIT = 0.1       # the retrainings' held-out val part when the final config sets none
GROUPS = ("searched", "random", "nonone")


@dataclass
class Cell:
    """One architecture of the experiment and where its retrainings live."""

    name: str          # search-seed<s>, random-<k> or nonone-<k>
    group: str         # one of GROUPS
    genotype: Path     # its genotype.yaml (a searched cell's exists once its search has finished)
    search: str = ""   # the id of the search job that makes it (searched cells)


@dataclass
class Plan:
    """Everything the experiment runs, in serial order."""

    search_cfgs: list
    retrain_cfgs: list
    cells: list
    jobs: list
    val_split: float | None        # None when the benchmark scores the cells
    benchmark: str | None = None   # the NATS-Bench file that scores the cells instead of retraining

    def score_ids(self, cell: Cell) -> list[str]:
        """The ids of the jobs whose records are the cell's scores (its retrainings, or its lookup)."""
        if self.benchmark is not None:
            return [f"{cell.name}/{BENCHMARK}"]
        return [f"{cell.name}/{RETRAIN}-seed{r}" for r in range(len(self.retrain_cfgs))]


def plan_experiment(search_config: str, final_config: str | None, seeds: int, random: int, out: Path,
                    overrides: list[str] = (), random_dir: Path | None = None, retrain_seeds: int = 3,
                    random_nonone: int | None = None, val_split: float | None = None,
                    benchmark: str | Path | None = None, first_seed: int = 0) -> Plan:
    """Checks the options, writes the random cells' genotypes and lists the jobs (see ``run_experiment``)."""
    for flag, value, low in (("--seeds", seeds, 1), ("--random", random, 1), ("--retrain-seeds", retrain_seeds, 1),
                             ("--random-nonone", 0 if random_nonone is None else random_nonone, 0)):
        if value < low:
            raise UserError(f"{flag} must be >= {low}, got {value}")
    if not 0 <= first_seed <= MAX_SEED - seeds + 1:
        raise UserError(f"--first-seed must be in [0, {MAX_SEED - seeds + 1:,}] with --seeds {seeds}, got {first_seed}")
    if val_split is not None and not 0 < val_split < 1:
        raise UserError(f"--val-split must be in (0, 1), got {val_split}")
    import search_spaces  # noqa: F401  (registers the spaces)
    from ..spaces.space import get_space

    search_cfgs = [load_config(search_config, [*overrides, f"seed={s}"]) for s in range(first_seed, first_seed + seeds)]
    space_name = search_cfgs[0].model.space
    if benchmark is not None:
        if space_name != "nb201":
            raise UserError(f"--benchmark looks cells up in NAS-Bench-201, but the search config searches "
                            f"{space_name!r}; drop --benchmark or search model.space=nb201")
        if final_config is not None:
            raise UserError("--benchmark scores the cells by lookup and --final-config by retraining; use one")
        from search_spaces.nb201_benchmark import NB201Benchmark

        NB201Benchmark(benchmark)  # a missing or malformed file: one line now, not after the searches
        retrain_cfgs, val_split = [], None
    else:
        if final_config is None:
            raise UserError("--final-config is required unless --benchmark scores the cells by lookup")
        final_cfg = load_config(final_config)
        if final_cfg.model.space != space_name:
            raise UserError(f"the final config trains {final_cfg.model.space!r} networks but the search config "
                            f"searches {space_name!r}; set model.space in {final_config}")
        # Decisions read a validation accuracy: the retrainings hold out part of the training set for it.
        val_split = val_split or final_cfg.train.val_split or DEFAULT_VAL_SPLIT
        retrain_cfgs = [load_config(final_config, [f"seed={r}", f"train.val_split={val_split}"])
                        for r in range(retrain_seeds)]
    if random_nonone is None:
        random_nonone = random if random_cells_can_hold_none(get_space(space_name)) else 0
    random_dir = random_dir or out
    out.mkdir(parents=True, exist_ok=True)
    cells = [Cell(f"search-seed{c.seed}", "searched", out / f"search-seed{c.seed}" / GENOTYPE, f"search-seed{c.seed}")
             for c in search_cfgs]
    for none_free, count in ((False, random), (True, random_nonone)):
        for path in write_random_genotypes(space_name, count, random_dir, none_free=none_free):
            cells.append(Cell(path.parent.name, "nonone" if none_free else "random", path))
    jobs = []
    for cell in cells:  # serial order: a search, then its cell's retrainings; then the random cells'
        run_dir = cell.genotype.parent
        if cell.search:
            jobs.append(Job(cell.search, "search", {"cfg": search_cfgs[cells.index(cell)], "out": run_dir}))
        after = (cell.search,) if cell.search else ()
        if benchmark is not None:
            jobs.append(Job(f"{cell.name}/{BENCHMARK}", BENCHMARK,
                            {"benchmark": str(benchmark), "genotype_path": cell.genotype}, after=after))
        for r, cfg in enumerate(retrain_cfgs):
            jobs.append(Job(f"{cell.name}/{RETRAIN}-seed{r}", "retrain",
                            {"cfg": cfg, "genotype_path": cell.genotype, "out": run_dir / f"{RETRAIN}-seed{r}"},
                            after=after))
    searches = tuple(c.search for c in cells if c.search)
    every_cell = {c.name: c.genotype for c in cells}
    for cfg, search in zip(search_cfgs, searches):  # each supernet scores every cell: after every search
        jobs.append(Job(f"{search}/supernet", "supernet", {"cfg": cfg, "run_dir": out / search, "cells": every_cell},
                        after=searches))
    return Plan(search_cfgs, retrain_cfgs, cells, jobs, val_split, None if benchmark is None else str(benchmark))


def unfinished_jobs(plan: Plan) -> tuple[list[Job], list[Job]]:
    """``(ready, waiting)``: unfinished jobs that can start now, and those waiting for another job."""
    done = {j.id for j in plan.jobs if job_done(j)}
    todo = [j for j in plan.jobs if j.id not in done]
    ready = [j for j in todo if all(a in done for a in j.after)]
    return ready, [j for j in todo if j not in ready]
