"""This project's GDAS search against the official GDAS code, side by side, under one budget.

For each search seed ``s`` in ``0..S-1`` both implementations search the
NAS-Bench-201 space on exactly the same batches: the split, order and
augmentation of the project's loaders for that seed (each side checks it by
hashing every batch it reads, per epoch):

* ``ours``: the project's ``Searcher`` (``nas.cli.build.build_searcher``) on the
  search config plus overrides;
* ``official``: ``TinyNetworkGDAS`` of ``xautodl`` stepped like ``search_func``
  of the official ``GDAS.py`` (``benchmarks/official.py``), with the same
  learning rates, temperatures, optimizer settings and epochs read from the
  same config.

Both derive with the same rule (the project's, including
``model.derive_exclude`` and ``model.exclude_zero``; the official logits have the project's row and
column order). Every derived cell is then retrained with seeds ``0..R-1``
under one fixed budget (``--final-config``, through ``nas.experiment``'s
retraining jobs). The result: per implementation, the cells, the mean test
accuracy and its standard error over search seeds (the spread of the per-cell
means, which holds both search and retraining noise), and the difference.

Layout: ``OUT/<impl>-seed<s>/`` holds ``search.json`` (genotype, final
probabilities, per-epoch batch hashes, time), ``genotype.yaml`` and
``retrain-seed<r>/`` (a ``train_final`` run dir). A finished job is skipped,
so rerunning the same command resumes; a job dir made with another config is
refused. xautodl is optional: without it the tool says so in one line and
exits 2.

Usage::

    python benchmarks/official_comparison.py --out runs/official_comparison --seeds 4 --retrain-seeds 3
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout without an install
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.official import (INSTALL_HINT, OFFICIAL_OPS, build_official, import_official,  # noqa: E402
                                 official_lr, official_optimizers, official_step, official_tau)
from nas.utils.atomic import atomic_write  # noqa: E402
from nas.cli.run_command import guarded_main  # noqa: E402
from nas.config import Config, build_config, diff_configs, load_config  # noqa: E402
from nas.utils.errors import UserError  # noqa: E402
from nas.spaces.genotype import GENOTYPE, genotype_record, save_genotype  # noqa: E402

IMPLEMENTATIONS = ("ours", "official")
SEARCH_DONE = "search.json"
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
# The comparison's budget on top of the search config: the shipped discriminative task, 40 epochs, N=2 and
# no shrinking (the quickstart's settings before it moved to digits_clutter_large with shrinking; the
# official search has no shrinking), and the official NAS-Bench-201 cell's gradient rule with `none` among
# the samples (the quickstart now uses sampled_op and never samples `none`; the official code does both).
DEFAULT_OVERRIDES = ("data.dataset=digits_clutter", "search.epochs=40", "model.N=2", "search.shrink_every=0",
                     "model.gdas_gate=all_ops", "search.sample_excluded=true")
# Neither side evaluates the supernet during the search (it does not change the search) nor draws figures.
FIXED_OVERRIDES = ("search.eval_every=0", "search.report=false", "search.progress=false")


# --------------------------------------------------------------------------- batches, recorded

class RecordingLoader:
    """Wraps a ``TensorLoader``: yields its batches and hashes each one read, per epoch.

    ``digests[epoch]`` is the SHA-1 of every batch (images and labels, in order)
    consumed from ``epoch(epoch)`` or ``cycle(epoch)``; two sides that read the
    same batches in the same order have equal digests.
    """

    def __init__(self, loader):
        self.loader = loader
        self._hashes: dict[int, "hashlib._Hash"] = {}
        self.counts: dict[int, int] = {}

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)

    def _record(self, epoch: int, batches):
        h = self._hashes.setdefault(epoch, hashlib.sha1())
        for x, y in batches:
            h.update(x.detach().cpu().contiguous().numpy().tobytes())
            h.update(y.detach().cpu().numpy().tobytes())
            self.counts[epoch] = self.counts.get(epoch, 0) + 1
            yield x, y

    def epoch(self, epoch: int, repeat: int = 0, start: int = 0):
        return self._record(epoch, self.loader.epoch(epoch, repeat, start))

    def cycle(self, epoch: int, start: int = 0):
        return self._record(epoch, self.loader.cycle(epoch, start))

    @property
    def digests(self) -> list[str]:
        return [self._hashes[e].hexdigest() for e in sorted(self._hashes)]


def recorded(data):
    """``data`` (a ``SearchData``) with its train and val loaders recorded."""
    return replace(data, train=RecordingLoader(data.train), val=RecordingLoader(data.val))


def batch_record(data) -> dict:
    return {"train_batches": data.train.digests, "val_batches": data.val.digests,
            "steps": [data.train.counts[e] for e in sorted(data.train.counts)]}


# --------------------------------------------------------------------------- the two searches

def search_ours(cfg: Config, log: Callable[[str], None]) -> dict:
    """The project's search; returns the genotype, final probabilities and batch hashes."""
    from nas.cli.build import build_searcher

    searcher = build_searcher(cfg, out_dir=None, log=log)
    searcher.data = recorded(searcher.data)
    started = time.perf_counter()
    searcher.run()
    arch = searcher.supernet.architecture
    probs = arch.probabilities()["cell"]
    genotype = searcher.space.format(searcher.derive(arch.derivation_scores({"cell": probs})))
    return {"genotype": genotype, "probabilities": _rounded(probs), "search_time": time.perf_counter() - started,
            **batch_record(searcher.data)}


def search_official(cfg: Config, log: Callable[[str], None], clip_arch: bool = True,
                    macro_bn_track: bool = True) -> dict:
    """The official ``TinyNetworkGDAS`` stepped like ``search_func`` on the project's batches for ``cfg``.

    The weights and logits come from the official constructor under
    ``torch.manual_seed(cfg.seed)``; the Gumbel noise from the global
    generator, as in the official code. Derivation: the project's rule on
    ``softmax(arch_parameters)``.
    """
    from nas.cli.build import build_search_data_from_config, resolve_device, seed_everything
    from nas.spaces.derive import derive_exclusions, derive_with_caps
    from nas.spaces.space import get_space

    space = get_space(cfg.model.space)
    if space.name != "nb201" or tuple(space.op_names) != OFFICIAL_OPS:
        raise UserError(f"the official GDAS model searches the nb201 space; set model.space=nb201 "
                        f"(got {cfg.model.space!r})")
    if cfg.model.mode != "gdas" or not cfg.search.bilevel or cfg.search.tau_schedule != "linear":
        raise UserError("the official GDAS search is bilevel gdas with a linear tau schedule; "
                        "set model.mode=gdas search.bilevel=true search.tau_schedule=linear")
    if cfg.search.shrink_every:
        raise UserError("the official GDAS search has no progressive shrinking; set search.shrink_every=0")
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, cfg.deterministic)
    data = recorded(build_search_data_from_config(cfg, device))
    torch.manual_seed(cfg.seed)
    net = build_official(cfg.model.C, cfg.model.N, data.num_classes, in_channels=data.in_channels,
                         macro_bn_track=macro_bn_track).to(device)
    s = cfg.search
    w_opt, a_opt = official_optimizers(net, s)
    clip = s.grad_clip if s.grad_clip > 0 else float("inf")
    clip_record: list[dict] = []
    started = time.perf_counter()
    for epoch in range(s.epochs):
        for group in w_opt.param_groups:
            group["lr"] = official_lr(epoch, s.epochs, s.lr, s.lr_min)
        net.set_tau(official_tau(epoch, s.epochs, s.tau_max, s.tau_min))
        net.train()
        sums = {"loss": 0.0, "arch_loss": 0.0}
        norms = []
        val = data.val.cycle(epoch)
        t0, n = time.perf_counter(), 0
        for x, y in data.train.epoch(epoch):
            xv, yv = next(val)
            out = official_step(net, w_opt, a_opt, x, y, xv, yv, clip=clip, clip_arch=clip_arch)
            if not (torch.isfinite(out["loss"]) and torch.isfinite(out["arch_loss"])):
                raise RuntimeError(f"official search: non-finite loss at epoch {epoch + 1}")
            sums["loss"] += float(out["loss"])
            sums["arch_loss"] += float(out["arch_loss"])
            norms.append((float(out["weight_norm"]), float(out["clip_norm"])))
            n += 1
        clip_record.append(clip_statistics(norms, clip))
        log(f"epoch {epoch + 1:>3}/{s.epochs}  tau {net.get_tau():.3f}  train loss {sums['loss'] / n:.3f}  "
            f"arch loss {sums['arch_loss'] / n:.3f}  {time.perf_counter() - t0:.1f}s")
    with torch.no_grad():
        probs = torch.softmax(net.arch_parameters.detach().float().cpu(), dim=-1)
    genotype = derive_with_caps(space, {"cell": probs}, cfg.model.derivation or None, cfg.model.max_skip,
                                cfg.model.max_parameter_free,
                                derive_exclusions(space, cfg.model.derive_exclude, cfg.model.exclude_zero))
    return {"genotype": space.format(genotype), "official_genotype": net.genotype().tostr(),
            "probabilities": _rounded(probs), "search_time": time.perf_counter() - started, "clip": clip_record,
            **batch_record(data)}


def clip_statistics(norms: list[tuple[float, float]], clip: float) -> dict:
    """One epoch of the weight step's clip: the weights' gradient norm ``w`` and the norm the clip saw ``t``.

    The clip scales the weight step by ``min(1, clip / t)``; clipping the
    weights alone would scale it by ``min(1, clip / w)``. Reported: the mean
    of both norms, how often each would clip, and the mean ratio of the two
    scales (1: the logits' gradients change nothing).
    """
    scale_w = [min(1.0, clip / w) if w > 0 else 1.0 for w, _ in norms]
    scale_t = [min(1.0, clip / t) if t > 0 else 1.0 for _, t in norms]
    return {"weight_norm": statistics.fmean(w for w, _ in norms), "clipped_norm": statistics.fmean(t for _, t in norms),
            "clipped_fraction_weights_only": statistics.fmean(float(w > clip) for w, _ in norms),
            "clipped_fraction": statistics.fmean(float(t > clip) for _, t in norms),
            "scale_ratio": statistics.fmean(a / b for a, b in zip(scale_t, scale_w))}


def _rounded(probs: torch.Tensor) -> list[list[float]]:
    return [[round(v, 5) for v in row] for row in probs.tolist()]


# --------------------------------------------------------------------------- jobs

def _file_log(path: Path) -> Callable[[str], None]:
    def log(text: str) -> None:
        with open(path, "a") as f:
            f.write(text + "\n")
    return log


def run_search(impl: str, cfg: Config, out: Path) -> tuple[dict, bool]:
    """Runs one implementation's search for ``cfg.seed`` unless ``out`` holds it; returns (record, skipped)."""
    done = out / SEARCH_DONE
    if done.is_file():
        record = json.loads(done.read_text())
        changed = diff_configs(build_config(record["config"]), cfg)
        if changed:
            raise UserError(f"{str(out)!r} was searched with a different config ({', '.join(changed[:4])} differ); "
                            "use another --out")
        return record, True
    out.mkdir(parents=True, exist_ok=True)
    log = _file_log(out / "log.txt")
    log(f"--- {impl} search, seed {cfg.seed}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
    torch.manual_seed(cfg.seed)
    result = search_ours(cfg, log) if impl == "ours" else search_official(cfg, log)
    from nas.spaces.space import get_space

    space = get_space(cfg.model.space)
    genotype = space.parse(result["genotype"])
    probs = torch.tensor(result["probabilities"])
    save_genotype(out / GENOTYPE, genotype_record(space, genotype, {"cell": probs}, mode="gdas",
                                                  source=impl, seed=cfg.seed))
    record = {"implementation": impl, "seed": cfg.seed, **result, "config": _config_dict(cfg)}
    atomic_write(done, lambda f: f.write(json.dumps(record, indent=1) + "\n"), mode="w")
    return record, False


def _config_dict(cfg: Config) -> dict:
    from dataclasses import asdict
    return asdict(cfg)


# --------------------------------------------------------------------------- statistics

def standard_error(values: list[float]) -> float:
    """Sample standard deviation over sqrt(n); nan for fewer than two values."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")


def summarize_implementation(cells: list[dict]) -> dict:
    """Mean and standard error over search seeds of the per-cell mean test accuracy.

    The unit is the search seed: each cell's accuracy is the mean of its
    retrainings, so the spread covers both search and retraining noise.
    ``retrain_sd`` is the pooled within-cell standard deviation (retraining
    noise alone).
    """
    means = [c["test_acc_mean"] for c in cells]
    within = [statistics.variance(c["test_acc"]) for c in cells if len(c["test_acc"]) > 1]
    return {"cells": len(cells), "mean": statistics.fmean(means), "se": standard_error(means),
            "min_cell": min(means), "max_cell": max(means),
            "retrain_sd": math.sqrt(statistics.fmean(within)) if within else float("nan")}


def difference(a: dict, b: dict) -> dict:
    """``a - b`` of two summaries, with the standard error of independent means."""
    return {"mean": a["mean"] - b["mean"], "se": math.sqrt(a["se"] ** 2 + b["se"] ** 2)}


# --------------------------------------------------------------------------- the comparison

def run_comparison(search_config: str, final_config: str, seeds: int | list[int], retrain_seeds: int, out: Path,
                   overrides: list[str] = (), say: Callable[[str], None] = print, from_seed: int = 0,
                   implementations: tuple[str, ...] = IMPLEMENTATIONS) -> dict | None:
    """Runs every unfinished job of the comparison and returns (and writes) its results.

    ``seeds``: a count ``S`` (seeds ``0..S-1``) or a list of seeds.
    ``from_seed > 0`` runs only the jobs of seeds ``from_seed..S-1`` and
    returns None, and so does a run of one implementation only: a share of the
    work for another process; a run of every seed and both implementations
    collects the table.
    """
    seed_list = list(range(seeds)) if isinstance(seeds, int) else sorted(set(seeds))
    if not seed_list or min(seed_list) < 0:
        raise UserError(f"--seeds must be >= 1 (or a list of seeds >= 0), got {seeds}")
    if not 0 <= from_seed < len(seed_list):
        raise UserError(f"--from-seed must be in 0..{len(seed_list) - 1}, got {from_seed}")
    if retrain_seeds < 1:
        raise UserError(f"--retrain-seeds must be >= 1, got {retrain_seeds}")
    import search_spaces  # noqa: F401  (registers the spaces)
    from nas.experiment.cell_jobs import run_retrain_job

    all_overrides = [*DEFAULT_OVERRIDES, *overrides, *FIXED_OVERRIDES]
    search_cfgs = [load_config(search_config, [*all_overrides, f"seed={s}"]) for s in seed_list]
    final_cfgs = [load_config(final_config, [f"seed={r}"]) for r in range(retrain_seeds)]
    if final_cfgs[0].model.space != search_cfgs[0].model.space:
        raise UserError(f"the final config trains {final_cfgs[0].model.space!r} networks but the search is in "
                        f"{search_cfgs[0].model.space!r}; set model.space in {final_config}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    search_cfgs = search_cfgs[from_seed:]
    if not implementations or set(implementations) - set(IMPLEMENTATIONS):
        raise UserError(f"--implementations must name some of {', '.join(IMPLEMENTATIONS)}, got {implementations}")
    implementations = [i for i in IMPLEMENTATIONS if i in implementations]
    total, done = len(implementations) * len(search_cfgs) * (1 + retrain_seeds), 0

    def report(name: str, what: str, skipped: bool, t0: float) -> None:
        nonlocal done
        done += 1
        took = "finished earlier, skipped" if skipped else f"{time.perf_counter() - t0:.0f}s"
        say(f"[{done:>{len(str(total))}}/{total}] {name:<28} {what}  {took}  "
            f"(elapsed {time.perf_counter() - started:.0f}s)")

    results: dict = {"implementations": {}}
    same_batches = True
    for cfg in search_cfgs:
        records = {}
        for impl in implementations:
            job = out / f"{impl}-seed{cfg.seed}"
            t0 = time.perf_counter()
            records[impl], skipped = run_search(impl, cfg, job)
            report(job.name, f"search: {records[impl]['genotype']}", skipped, t0)
        if len(records) == 2:
            a, b = records["ours"], records["official"]
            same = (a["train_batches"] == b["train_batches"] and a["val_batches"] == b["val_batches"]
                    and a["steps"] == b["steps"])
            if not same:
                say(f"WARNING: seed {cfg.seed}: the two searches read different batches")
            same_batches &= same
        for impl in implementations:
            job = out / f"{impl}-seed{cfg.seed}"
            accs, train_time = [], 0.0
            for final_cfg in final_cfgs:
                t0 = time.perf_counter()
                final, skipped = run_retrain_job(final_cfg, job / GENOTYPE, job / f"retrain-seed{final_cfg.seed}")
                report(f"{job.name}/retrain-seed{final_cfg.seed}", f"test {final['test_acc']:.2f}%", skipped, t0)
                accs.append(final["test_acc"])
                train_time += final["train_time"]
            cell = {"seed": cfg.seed, "genotype": records[impl]["genotype"], "test_acc": accs,
                    "test_acc_mean": statistics.fmean(accs), "search_time": records[impl]["search_time"],
                    "retrain_time": train_time}
            if impl == "official":
                cell["official_genotype"] = records[impl]["official_genotype"]
            results["implementations"].setdefault(impl, []).append(cell)
    if from_seed or len(implementations) < 2:
        return None
    summary = {impl: summarize_implementation(cells) for impl, cells in results["implementations"].items()}
    command = ["python benchmarks/official_comparison.py", "--search-config", search_config, "--final-config",
               final_config, "--seeds", ",".join(map(str, seed_list)) if not isinstance(seeds, int) else str(seeds),
               "--retrain-seeds", str(retrain_seeds), "--out", str(out),
               *overrides]
    results.update({
        "command": " ".join(command), "search_config": search_config, "final_config": final_config,
        "overrides": all_overrides, "seeds": seed_list, "retrain_seeds": retrain_seeds,
        "same_batches": same_batches, "summary": summary,
        "difference_ours_minus_official": difference(summary["ours"], summary["official"]),
        "wall_time_this_invocation": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
    })
    text = json.dumps(results, indent=1) + "\n"
    atomic_write(out / RESULTS_JSON, lambda f: f.write(text), mode="w")
    markdown = format_markdown(results)
    atomic_write(out / RESULTS_MD, lambda f: f.write(markdown), mode="w")
    return results


def _seeds(seeds: list[int]) -> str:
    return f"0..{len(seeds) - 1}" if seeds == list(range(len(seeds))) else ", ".join(map(str, seeds))


def _cell(genotype: str) -> str:
    return "`" + genotype.replace("|", "\\|") + "`"


def format_markdown(results: dict) -> str:
    """The summary table, the difference, then every cell with its retrainings."""
    r = results
    lines = [f"`{r['command']}`", "",
             f"Search: `{r['search_config']}` + `{' '.join(r['overrides'])}`, seeds {_seeds(r['seeds'])}; "
             f"retraining: `{r['final_config']}`, seeds 0..{r['retrain_seeds'] - 1}. Both sides read the same "
             f"batches: {'yes' if r['same_batches'] else 'NO'}. Test accuracy (%); the standard error is over "
             "search seeds (per-cell means).", "",
             "| implementation | cells | mean | s.e. | worst cell | best cell | retraining sd |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for impl, s in r["summary"].items():
        lines.append(f"| {impl} | {s['cells']} | {s['mean']:.2f} | {s['se']:.2f} | {s['min_cell']:.2f} | "
                     f"{s['max_cell']:.2f} | {s['retrain_sd']:.2f} |")
    d = r["difference_ours_minus_official"]
    lines += ["", f"Difference, ours - official: {d['mean']:+.2f} +- {d['se']:.2f} (s.e.).", "",
              "| implementation | seed | test acc per retraining | mean | search time | genotype |",
              "|---|---:|---|---:|---:|---|"]
    for impl, cells in r["implementations"].items():
        for c in cells:
            accs = " / ".join(f"{a:.2f}" for a in c["test_acc"])
            lines.append(f"| {impl} | {c['seed']} | {accs} | {c['test_acc_mean']:.2f} | {c['search_time']:.0f}s | "
                         f"{_cell(c['genotype'])} |")
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line

def _seed_arg(text: str) -> int | list[int]:
    try:
        return [int(t) for t in text.split(",")] if "," in text else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a comma-separated list of seeds, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/official_comparison.py",
                                description="This project's GDAS search against the official GDAS code.")
    p.add_argument("--search-config", default="configs/quickstart.yaml", help="(default: configs/quickstart.yaml)")
    p.add_argument("--final-config", default="configs/experiment_final_clutter.yaml",
                   help="the retraining budget (default: configs/experiment_final_clutter.yaml)")
    p.add_argument("--seeds", type=_seed_arg, default=4,
                   help="search seeds per implementation: a count S (seeds 0..S-1) or a comma-separated list "
                        "(default 4)")
    p.add_argument("--retrain-seeds", type=int, default=3, help="retrainings of each cell, seeds 0..R-1 (default 3)")
    p.add_argument("--out", required=True, help="the comparison's dir; rerunning with the same dir resumes")
    p.add_argument("--from-seed", type=int, default=0,
                   help="run only seeds K..S-1 and write no table (to share one comparison between processes; "
                        "a run without it then collects the table)")
    p.add_argument("--implementations", default=",".join(IMPLEMENTATIONS),
                   help="run only these (comma-separated; default: both) and write no table, like --from-seed")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help=f"search config overrides, after the defaults {' '.join(DEFAULT_OVERRIDES)}")
    return p


def run(args: argparse.Namespace) -> int:
    if import_official() is None:
        raise UserError(f"the official GDAS code is not installed; {INSTALL_HINT} to compare against it")
    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    results = run_comparison(args.search_config, args.final_config, args.seeds, args.retrain_seeds,
                             Path(args.out), args.overrides, say=lambda m: print(m, flush=True),
                             from_seed=args.from_seed,
                             implementations=tuple(i.strip() for i in args.implementations.split(",")))
    if results is None:
        print("those seeds are done; rerun without --from-seed for the table")
        return 0
    print(format_markdown(results))
    print(f"wrote {Path(args.out) / RESULTS_MD} and {Path(args.out) / RESULTS_JSON}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; bad input (xautodl missing included) is one line on stderr and exit status 2."""
    return guarded_main(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
