"""What each job of the experiment does: search, retrain, score on a supernet or by benchmark lookup.

Every job owns one dir (a search's run dir, or a cell's ``retrain-seed<r>/``),
holds a lock on it while it runs, refuses a dir made with another config, and
leaves a file that marks it finished (``search.json``, ``final.json``,
``supernet_scores.json``), so a rerun skips it; an interrupted job continues
from its checkpoint. ``execute_job`` is what ``jobs.run_jobs`` calls, here or
in a spawned worker. The random cells' genotypes are drawn here too: one
seeded stream per group, so K cells are a prefix of K' > K.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..cli.run_command import CONFIG, open_run_dir, stop_signals
from ..config import Config, build_config, diff_configs, read_yaml
from ..engine.loop import CHECKPOINT
from ..engine.train import FINAL
from ..layers.op_traits import ops_with
from ..spaces.genotype import GENOTYPE, genotype_record, load_genotype, save_genotype
from ..utils.atomic import atomic_write
from ..utils.errors import UserError
from .jobs import Job

SEARCH_DONE = "search.json"   # written once a search has run all its epochs
RETRAIN = "retrain"           # the retraining run dir inside each architecture's dir
RANDOM_SEED = 0               # the random cells are one stream of this generator: K=8 is a prefix of K=16
NONONE_SEED = 1               # the none-free random cells: a stream of their own, also a prefix for any K
JOB_LOG = "log.txt"           # the epoch lines of a job (the console gets one line per job)
SUPERNET_SCORES = "supernet_scores.json"  # in a search's dir: its supernet's accuracy of every cell
BENCHMARK = "benchmark"       # the lookup job of a cell scored by the NB201 benchmark (no dir of its own)


def _file_log(path: Path) -> Callable[[str], None]:
    def log(text: str) -> None:
        with open(path, "a") as f:
            f.write(text + "\n")
    return log


@contextlib.contextmanager
def _job_lock(out: Path) -> Iterator[None]:
    """Holds an exclusive lock on a job dir while its job runs.

    Two experiments sharing ``--random-dir`` then never train the same cell at
    once: the second waits, then finds the job finished and skips it.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking, do not share a random dir between concurrent runs
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_config(out: Path, cfg: Config) -> None:
    """Refuses a job dir made with another config (finished or not: its results would be stale)."""
    if (out / CONFIG).is_file():
        changed = diff_configs(build_config(read_yaml(out / CONFIG)), cfg)
        if changed:
            raise UserError(f"{str(out)!r} was run with a different config ({', '.join(changed[:4])} differ); "
                            "use another --out (or --random-dir) for a different experiment")


def run_search_job(cfg: Config, out: Path) -> tuple[dict, bool]:
    """Runs (or continues) one search; returns its summary and whether it was already finished."""
    with _job_lock(out):
        return _search(cfg, out)


def _search(cfg: Config, out: Path) -> tuple[dict, bool]:
    from ..cli.build import build_searcher

    _check_config(out, cfg)
    if (out / SEARCH_DONE).is_file():
        return json.loads((out / SEARCH_DONE).read_text()), True
    searcher = build_searcher(cfg, log=lambda _: None)
    open_run_dir(out, cfg, resume=(out / CONFIG).is_file(), lock=False)  # _job_lock holds .lock
    searcher.out_dir, searcher.log = out, _file_log(out / JOB_LOG)
    if (out / CHECKPOINT).is_file():
        searcher.resume(out / CHECKPOINT)
    with stop_signals(searcher.request_stop):
        final = searcher.run()
    summary = {"seed": cfg.seed, "genotype": final["genotype"], "val_acc": final.get("val_acc"),
               "epochs": cfg.search.epochs,
               # training, plus the final selection under a search.select other than logits
               "search_time": sum(m["epoch_time"] + m.get("selection_time", 0.0) for m in searcher.history)}
    atomic_write(out / SEARCH_DONE, lambda f: f.write(json.dumps(summary, indent=2) + "\n"), mode="w")
    return summary, False


def run_retrain_job(cfg: Config, genotype_path: Path, out: Path) -> tuple[dict, bool]:
    """Retrains (or continues retraining) one genotype; returns ``final.json`` and whether it existed."""
    with _job_lock(out):
        return _retrain(cfg, genotype_path, out)


def _retrain(cfg: Config, genotype_path: Path, out: Path) -> tuple[dict, bool]:
    from ..cli.build import build_final_trainer

    _check_config(out, cfg)
    if (out / FINAL).is_file():
        return json.loads((out / FINAL).read_text()), True
    trainer, space, genotype = build_final_trainer(cfg, genotype_path, log=lambda _: None)
    open_run_dir(out, cfg, resume=(out / CONFIG).is_file(), lock=False)  # _job_lock holds .lock
    kept = out / GENOTYPE
    if kept.is_file() and load_genotype(kept)[1] != genotype:
        raise UserError(f"{str(out)!r} retrains another genotype than {str(genotype_path)!r}; delete {out}")
    if not kept.is_file():
        save_genotype(kept, genotype_record(space, genotype))
    trainer.out_dir, trainer.log = out, _file_log(out / JOB_LOG)
    if (out / CHECKPOINT).is_file():
        trainer.resume(out / CHECKPOINT)
    with stop_signals(trainer.request_stop):
        trainer.run()
    record = trainer.write_summary(space=space.name, genotype=space.format(genotype), dataset=cfg.data.dataset)
    return record, False


def random_cells_can_hold_none(space) -> bool:
    """Whether the space's random cells may hold its zero op (``none``; cells with ``edge_ops``: nb201)."""
    return (bool(ops_with(space.op_traits(), zero=True))
            and hasattr(space.random_genotype(torch.Generator().manual_seed(0)), "edge_ops"))


def write_random_genotypes(space_name: str, count: int, random_dir: Path, none_free: bool = False) -> list[Path]:
    """Draws ``count`` random cells (one seeded stream) and writes ``<prefix>-<k>/genotype.yaml``.

    ``none_free`` draws from a stream of its own (``NONONE_SEED``) and redraws
    every cell that holds ``none``: uniform over the cells without it
    (``nonone-<k>``); otherwise ``random-<k>``, uniform over the whole space.
    """
    from ..spaces.space import get_space

    space = get_space(space_name)
    prefix, seed = ("nonone", NONONE_SEED) if none_free else ("random", RANDOM_SEED)
    if none_free and count and not random_cells_can_hold_none(space):  # 0 cells: the default for such spaces
        raise UserError(f"--random-nonone applies to spaces whose random cells may hold 'none' (nb201); "
                        f"the {space.name} space's never do: use --random-nonone 0")
    generator = torch.Generator().manual_seed(seed)
    zero_ops = set(ops_with(space.op_traits(), zero=True))  # the declared zero op (nb201: none)
    paths = []
    for k in range(count):
        genotype = space.random_genotype(generator)
        while none_free and any(op in zero_ops for _, _, op in space.genotype_edges(genotype)):
            genotype = space.random_genotype(generator)
        path = random_dir / f"{prefix}-{k}" / GENOTYPE
        if path.is_file():
            if load_genotype(path)[1] != genotype:
                raise UserError(f"{str(path)!r} is not the random cell this tool draws for k={k}; delete it")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_genotype(path, genotype_record(space, genotype, source=prefix, index=k, seed=seed))
        paths.append(path)
    return paths


def _wanted_scores(run_dir: Path, cells: dict[str, str]) -> tuple[dict, dict, dict]:
    """``(genotypes, formatted, stored)``: each cell's genotype and string, and the scores already stored."""
    genotypes, formatted = {}, {}
    for name, path in cells.items():
        space, genotypes[name] = load_genotype(path)
        formatted[name] = space.format(genotypes[name])
    stored = json.loads((run_dir / SUPERNET_SCORES).read_text()) if (run_dir / SUPERNET_SCORES).is_file() else {}
    return genotypes, formatted, stored


def supernet_scores_done(run_dir: Path, cells: dict[str, str]) -> bool:
    """Whether ``SUPERNET_SCORES`` already holds every cell (by name and genotype)."""
    if not all(Path(p).is_file() for p in cells.values()):
        return False
    _, formatted, stored = _wanted_scores(run_dir, cells)
    return all(stored.get(n, {}).get("genotype") == g for n, g in formatted.items())


def score_on_supernet(cfg: Config, run_dir: Path, cells: dict[str, str]) -> tuple[dict, bool]:
    """Accuracy of each cell on a finished search's supernet (shared weights, the search's val split).

    What the search believes of each cell: ``Searcher.evaluate`` of the cell on
    the final checkpoint, over ``data.val_eval``. Stored in ``SUPERNET_SCORES``
    (name -> genotype, val_acc, val_loss); cells already there are not scored again.

    Args:
        cfg: The search's config.
        run_dir: The search's run dir (with its final ``checkpoint.pt``).
        cells: name -> genotype file of every cell to score.
    """
    from ..cli.build import build_searcher

    with _job_lock(run_dir):
        genotypes, formatted, stored = _wanted_scores(run_dir, cells)
        todo = [n for n, g in formatted.items() if stored.get(n, {}).get("genotype") != g]
        if not todo:
            return {n: stored[n] for n in cells}, True
        if not (run_dir / CHECKPOINT).is_file():
            raise UserError(f"{str(run_dir)!r} has no {CHECKPOINT}, whose supernet scores the cells; "
                            f"delete {run_dir} and rerun to search again")
        searcher = build_searcher(cfg, log=lambda _: None)
        searcher.resume(run_dir / CHECKPOINT)
        for name in todo:
            loss, acc = searcher.evaluate(searcher.data.val_eval, genotypes[name])
            stored[name] = {"genotype": formatted[name], "val_acc": acc, "val_loss": loss}
        text = json.dumps(stored, indent=2) + "\n"
        atomic_write(run_dir / SUPERNET_SCORES, lambda f: f.write(text), mode="w")
        return {n: stored[n] for n in cells}, False


def score_by_benchmark(benchmark: str, genotype_path: Path) -> tuple[dict, bool]:
    """Scores one NB201 cell by lookup in the NATS-Bench topology benchmark instead of retraining it.

    Returns a ``final.json``-like record (``val_acc`` = the benchmark's CIFAR-10-valid accuracy,
    ``test_acc`` = its CIFAR-10 test accuracy, both after the 200-epoch protocol) and False (a
    lookup is cheap, so it is never stored and never skipped).
    """
    from search_spaces.nb201_benchmark import NB201Benchmark, experiment_score

    record = experiment_score(NB201Benchmark(benchmark), genotype_path)
    record["val_acc"] = record["benchmark"]["cifar10"]["valid"]
    return record, False


def execute_job(job: Job) -> tuple[dict, bool]:
    """Runs one job by its kind (``JOB_KINDS``); returns its record and whether it had finished earlier."""
    import search_spaces  # noqa: F401  (registers the spaces in a spawned worker)

    return JOB_KINDS[job.kind](**job.spec)


# kind -> function(**spec) -> (record, skipped). A retraining's record is its final.json; ``gather`` reads its
# genotype, val_acc, test_acc and train_time, so another way to score a cell returns those keys.
JOB_KINDS: dict[str, Callable[..., tuple[dict, bool]]] = {
    "search": run_search_job, "retrain": run_retrain_job, "supernet": score_on_supernet,
    BENCHMARK: score_by_benchmark}


def job_done(job: Job) -> bool:
    """Whether a job's result is on disk (it would be skipped)."""
    if job.kind == "search":
        return (job.spec["out"] / SEARCH_DONE).is_file()
    if job.kind == "supernet":
        return supernet_scores_done(job.spec["run_dir"], job.spec["cells"])
    if job.kind == BENCHMARK:
        return False  # a lookup: never stored, redone on every run
    return (job.spec["out"] / FINAL).is_file()
