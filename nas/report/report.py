"""Pictures of a search run: ``python -m nas.report RUN_DIR [--out DIR]``.

Reads what a search writes (``metrics.jsonl``, ``genotype.yaml``,
``config.yaml``; a run still in progress is fine) and writes PNGs into
``RUN_DIR/report/``:

* ``probabilities_<group>.png``: every edge's op probabilities over the epochs,
  the derived op of each edge in bold;
* ``heatmap_<group>.png``: the final probabilities, edges x ops, the derived op(s)
  boxed and every more likely op marked with why it was not derived (excluded,
  never derived by the space's rule, or capped); edges the rule dropped greyed;
* ``curves.png``: losses, accuracies and two convergence signals (entropy and
  the top probability of every edge, with the epochs where the cell changed);
* ``tau.png``: the temperature (and learning-rate) schedule;
* ``settling.png``: each edge's top probability over the epochs against the
  settling threshold, settled epochs dotted (``nas.settling``);
* ``benchmark.png`` (with ``search.nb201_benchmark``): the NAS-Bench-201
  benchmark accuracies of each epoch's derived cell;
* ``cell_<kind>.png`` and ``cell_<kind>.dot``: the derived cell(s).

matplotlib is an optional dependency (``pip install -e ".[viz]"``); without it
``write_report`` raises ``VizDependencyMissing`` and the CLI exits 0 with a note.
Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never
through pyplot, so no display is needed and no global backend is changed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


from ..layers.op_traits import LEARNED, OpTraits, ops_with
from ..utils.errors import UserError
from ..utils.yamlio import read_user_yaml

REPORT_DIR = "report"
DPI = 120
INSTALL_HINT = 'pip install -e ".[viz]"'
STYLE = {"font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "legend.fontsize": 9,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 12.5,
         "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False}


class VizDependencyMissing(ImportError):
    """matplotlib is not installed; the message says how to install it."""


@dataclass
class SearchRun:
    """What the report needs from a run directory.

    Attributes:
        run_dir: The run directory.
        metrics: One dict per finished epoch (``metrics.jsonl``).
        config: The resolved config (empty if ``config.yaml`` is missing).
        space: The search space.
        genotype: The derived genotype of the last epoch (the space's record).
        edge_names: group -> edge names, in logit row order.
        op_names: Op names, in logit column order.
    """

    run_dir: Path
    metrics: list[dict]
    config: dict
    space: Any
    genotype: Any
    edge_names: dict[str, list[str]]
    op_names: list[str]

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of a metric, skipping the epochs that lack it (val is not every epoch)."""
        rows = [(m["epoch"], m[key]) for m in self.metrics if m.get(key) is not None]
        return [r[0] for r in rows], [r[1] for r in rows]

    def title(self) -> str:
        """A one-line description: run name, space, mode, dataset, epochs done."""
        model, data = self.config.get("model", {}), self.config.get("data", {})
        total = self.config.get("search", {}).get("epochs", "?")
        parts = [self.run_dir.resolve().name, self.space.name, model.get("mode", ""), data.get("dataset", "")]
        return " | ".join(p for p in parts if p) + f" | epoch {self.metrics[-1]['epoch']}/{total}"


def _read_yaml(path: Path) -> dict:
    data = read_user_yaml(path, "run file")
    return data if isinstance(data, dict) else {}


def _read_metrics(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    metrics = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            metrics.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # a running search may be half-way through appending it
                break
            raise UserError(f"{str(path)!r} line {number} is not JSON; is this a metrics file of a search?") from None
    if not metrics:
        raise UserError(f"{str(path)!r} has no finished epoch yet; run the report after the first epoch")
    if not all("probabilities" in m and "epoch" in m for m in metrics):
        raise UserError(f"{str(path)!r} lacks per-epoch 'probabilities'; it is not a search's metrics file")
    return metrics


def load_run(run_dir: str | Path) -> SearchRun:
    """Reads a finished or running search's directory.

    Raises:
        UserError: if the directory or its ``metrics.jsonl`` is missing or unreadable.
    """
    import search_spaces  # noqa: F401  (registers the spaces get_space looks up)
    from ..spaces.space import get_space

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {str(run_dir)!r} does not exist; pass the --out directory of a search")
    if not (run_dir / "metrics.jsonl").is_file():
        raise UserError(f"{str(run_dir)!r} has no metrics.jsonl; pass the --out directory of train_search.py")
    metrics = _read_metrics(run_dir / "metrics.jsonl")
    config, record = _read_yaml(run_dir / "config.yaml"), _read_yaml(run_dir / "genotype.yaml")
    groups = set(metrics[-1]["probabilities"])
    name = config.get("model", {}).get("space") or record.get("space") or ("nb201" if groups == {"cell"} else "darts")
    space = get_space(str(name))
    # The genotype must match the plotted probabilities: genotype.yaml is written
    # just after the metrics line, so while a search runs it may lag one epoch.
    text = record.get("genotype") if record.get("epoch") == metrics[-1]["epoch"] else None
    genotype = space.parse(str(text or metrics[-1]["genotype"]))
    edge_names, op_names = space.edge_names(), list(space.op_names)
    for group, probs in metrics[-1]["probabilities"].items():  # a custom op list: fall back to numbers
        names = edge_names.get(group, [])
        if len(probs) < len(names) and len(probs[0]) == len(op_names):
            names = edge_names[group] = names[:len(probs)]  # a shallower macro (mobilenet's N): its rows are a prefix
        if len(probs) != len(names) or len(probs[0]) != len(op_names):
            edge_names[group] = [f"edge {e}" for e in range(len(probs))]
            op_names = op_names if len(probs[0]) == len(op_names) else [f"op {k}" for k in range(len(probs[0]))]
    return SearchRun(run_dir, metrics, config, space, genotype, edge_names, op_names)


def _matplotlib():
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise VizDependencyMissing(f"the search report needs matplotlib, which is not installed: "
                                   f"{INSTALL_HINT}") from e
    return matplotlib, Figure, FigureCanvasAgg


def op_colors(op_names: list[str], traits: dict[str, OpTraits] | None = None) -> dict[str, Any]:
    """One fixed colour per op, the same in every figure (zero ops, by their declared traits, are grey)."""
    import matplotlib

    traits = traits or {}
    cmap = matplotlib.colormaps["tab10" if len(op_names) <= 10 else "tab20"]
    colors, k = {}, 0
    for name in op_names:
        if traits.get(name, LEARNED).zero:
            colors[name] = (0.55, 0.55, 0.55, 1.0)
        else:
            colors[name] = cmap(k if k != 7 else 9)  # tab10's 7 is grey: keep grey for the zero op
            k += 1
    return colors


def convergence(run: SearchRun) -> dict[str, Any]:
    """Per-epoch convergence signals.

    Returns:
        ``epochs``; per group the mean, min and max over edges of the top
        probability (``max_prob``) and of the entropy divided by ``log(num_ops)``
        (``entropy``: 1 is uniform, 0 is one-hot); ``changes``: the epochs whose
        derived genotype differs from the epoch before.
    """
    log_k = math.log(len(run.op_names))
    out: dict[str, Any] = {"epochs": [m["epoch"] for m in run.metrics], "max_prob": {}, "entropy": {}}
    for group in run.metrics[-1]["probabilities"]:
        tops = [[max(row) for row in m["probabilities"][group]] for m in run.metrics]
        ents = [[e / log_k for e in m["entropy"][group]] if "entropy" in m else
                [-sum(p * math.log(p) for p in row if p > 0) / log_k for row in m["probabilities"][group]]
                for m in run.metrics]
        out["max_prob"][group] = [(sum(t) / len(t), min(t), max(t)) for t in tops]
        out["entropy"][group] = [(sum(e) / len(e), min(e), max(e)) for e in ents]
    out["changes"] = [b["epoch"] for a, b in zip(run.metrics, run.metrics[1:]) if a.get("genotype") != b.get("genotype")]
    return out


@dataclass
class DerivationMarks:
    """What derivation made of one group's edges at one epoch, for the figures to mark.

    Attributes:
        derived: Per edge, the op columns the genotype keeps there (two for an edge with two
            ops, none for an edge the space's rule dropped).
        dropped: Per edge, True when the genotype keeps no op on it (DARTS keeps two inputs per node).
        top: Per edge, the most likely op column.
        passed_over: Per edge, ``{op column: reason}`` for every op more likely than the weakest
            derived op of that edge that was not derived: ``excluded`` (``model.derive_exclude``, ``model.exclude_zero``),
            ``rule`` (the space's rule never derives it, e.g. DARTS's ``none``) or ``capped``
            (ruled out by ``model.max_skip`` / ``model.max_parameter_free``).
        excluded: Op columns the run excluded (``model.derive_exclude``, the zero op with ``model.exclude_zero``).
    """

    derived: list[list[int]]
    dropped: list[bool]
    top: list[int]
    passed_over: list[dict[int, str]]
    excluded: list[int]


def _ops_the_rule_never_derives(space: Any, shapes: dict[str, tuple[int, int]]) -> set[str]:
    """Op names the space's own rule never derives (DARTS's ``none``): probed with each op strongest everywhere."""
    import torch

    names = list(space.op_names)
    never = set()
    for k, name in enumerate(names):
        probs = {}
        for group, (rows, cols) in shapes.items():
            p = [[0.5 / (cols - 1)] * cols for _ in range(rows)]
            for row in p:
                row[k] = 0.5
            probs[group] = p
        try:
            genotype = space.derive_genotype({g: torch.tensor(p, dtype=torch.float64) for g, p in probs.items()})
        except Exception:  # noqa: BLE001  (a space that cannot take this probe marks nothing as "rule")
            return set()
        if not any(op == name for _, _, op in space.genotype_edges(genotype)):
            never.add(name)
    return never


def _rederived(space: Any, metrics: dict, model: dict, recorded: Any) -> Any:
    """The genotype derived again from the epoch's probabilities with the run's rule, caps and exclusions,
    if it formats as the recorded one (else the recorded one).

    A native string can lose where things sat (MobileNet's ``arch_def`` drops skip layers, so a parsed
    genotype has no skips); the derivation itself still has them.
    """
    import torch

    from ..spaces.derive import derive_with_caps

    try:
        scores = {g: torch.tensor(p, dtype=torch.float64) for g, p in metrics["probabilities"].items()}
        for g, w in (metrics.get("edge_coefficients") or metrics.get("edge_weights") or {}).items():  # PC-DARTS ranks edge weight x probability
            scores[g] = scores[g] * torch.tensor(w, dtype=torch.float64)[:, None]
        genotype = derive_with_caps(space, scores, model.get("derivation") or None, int(model.get("max_skip", -1)),
                                    int(model.get("max_parameter_free", -1)), _excluded(space, model))
    except Exception:  # noqa: BLE001  (an old or foreign run: keep what it recorded)
        return recorded
    return genotype if space.format(genotype) == space.format(recorded) else recorded


def _excluded(space: Any, model: dict) -> list[str]:
    """The op names a run's derivation excluded: ``model.derive_exclude`` and, with ``model.exclude_zero``,
    the space's zero ops (as ``nas.spaces.derive.derive_exclusions``; a run from before the key: none)."""
    names = list(model.get("derive_exclude") or [])
    if model.get("exclude_zero"):
        names += [n for n in ops_with(space.op_traits(), zero=True) if n not in names]
    return names


def derivation_marks(run: SearchRun, epoch_index: int = -1) -> dict[str, DerivationMarks]:
    """group -> ``DerivationMarks`` of the genotype of an epoch (the last: ``genotype.yaml``'s when it is current).

    Args:
        run: The loaded run.
        epoch_index: Index into ``run.metrics``.
    """
    metrics = run.metrics[epoch_index]
    last = epoch_index in (-1, len(run.metrics) - 1)
    genotype = run.genotype if last else run.space.parse(str(metrics["genotype"]))
    probs = metrics["probabilities"]
    if list(run.op_names) != list(run.space.op_names):  # a custom op list: nothing to mark by name
        return {}
    model = run.config.get("model", {})
    genotype = _rederived(run.space, metrics, model, genotype)
    excluded_names = set(_excluded(run.space, model))
    shapes = {g: (len(rows), len(rows[0])) for g, rows in probs.items()}
    never = _ops_the_rule_never_derives(run.space, shapes)
    kept: dict[tuple[str, int], list[int]] = {}
    for group, row, op in run.space.genotype_edges(genotype):
        kept.setdefault((group, row), []).append(run.op_names.index(op))
    # A space without a zero op drops no edge: a layer-wise space whose genotype string leaves
    # layers out (MobileNet's arch_def) ran its one skip op there.
    traits = run.space.op_traits()
    skips = ops_with(traits, skip=True)
    skip = run.op_names.index(skips[0]) if len(skips) == 1 and not ops_with(traits, zero=True) else None
    out = {}
    for group, rows in probs.items():
        derived = [sorted(kept.get((group, e), [])) for e in range(len(rows))]
        if skip is not None:  # a layer its string leaves out is a skip (an identity)
            derived = [d or ([skip] if rows[e][skip] > 0 else d) for e, d in enumerate(derived)]
        passed = []
        for e, row in enumerate(rows):
            reasons = {}
            if derived[e]:
                floor = min(row[k] for k in derived[e])
                for k, p in enumerate(row):
                    if k in derived[e] or p <= floor:
                        continue
                    name = run.op_names[k]
                    reasons[k] = "excluded" if name in excluded_names else "rule" if name in never else "capped"
            passed.append(reasons)
        out[group] = DerivationMarks(
            derived=derived, dropped=[not d for d in derived],
            top=[max(range(len(row)), key=row.__getitem__) for row in rows], passed_over=passed,
            excluded=[k for k, name in enumerate(run.op_names) if name in excluded_names])
    return out


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Writes the report's PNGs (and the cells' ``.dot`` files) for a search run.

    Args:
        run_dir: The search's run directory (finished or still running).
        out_dir: Where to write; default ``RUN_DIR/report``.

    Returns:
        The written files.

    Raises:
        VizDependencyMissing: if matplotlib is not installed (an ``ImportError``).
        UserError: for a missing or unreadable run directory, or an unwritable ``out_dir``.
    """
    from . import figures

    matplotlib, Figure, Canvas = _matplotlib()
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / REPORT_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create report directory {str(out)!r}: {e.strerror}") from None

    def save(fig, name: str) -> Path:
        Canvas(fig)  # the Agg canvas: PNG output without pyplot or a display
        path = out / name
        try:
            fig.savefig(path, dpi=DPI)
        except OSError as e:
            raise UserError(f"cannot write {str(path)!r}: {e.strerror}") from None
        return path

    written: list[Path] = []
    with matplotlib.rc_context(STYLE):
        colors = op_colors(run.op_names, run.space.op_traits())
        marks = derivation_marks(run)
        for group in run.metrics[-1]["probabilities"]:
            written.append(save(figures.probabilities_figure(Figure, run, group, colors, marks.get(group)),
                                f"probabilities_{group}.png"))
            written.append(save(figures.heatmap_figure(Figure, run, group, marks.get(group)), f"heatmap_{group}.png"))
        written.append(save(figures.curves_figure(Figure, run, convergence(run)), "curves.png"))
        written.append(save(figures.tau_figure(Figure, run), "tau.png"))
        if any("settling" in m for m in run.metrics):
            threshold = run.config.get("search", {}).get("settle_probability", 0.5)
            written.append(save(figures.settling_figure(Figure, run, threshold), "settling.png"))
        if any(m.get("benchmark") for m in run.metrics):
            written.append(save(figures.benchmark_figure(Figure, run), "benchmark.png"))
        try:
            cells = run.space.cell_graphs(run.genotype)
        except NotImplementedError:  # a space without diagrams still gets every other figure
            cells = {}
        for kind, edges in cells.items():
            written.append(save(figures.cell_figure(Figure, run, kind, edges, colors), f"cell_{kind}.png"))
            dot = out / f"cell_{kind}.dot"
            dot.write_text(figures.cell_dot(kind, edges))
            written.append(dot)
    return written


def try_write_report(run_dir: str | Path, out_dir: str | Path | None = None,
                     log: Callable[[str], None] = print) -> list[Path]:
    """``write_report`` for the end of a search: never raises, logs one line instead.

    The search's results are already on disk when it runs, so a missing
    matplotlib (or any plotting problem) must not turn a finished search into a failed one.
    """
    try:
        paths = write_report(run_dir, out_dir)
    except VizDependencyMissing:
        log(f"note: no report pictures (matplotlib is not installed): {INSTALL_HINT}")
        return []
    except Exception as e:  # noqa: BLE001  (best effort, see above)
        log(f"note: the report could not be written ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            f"retry with python -m nas.report {run_dir} --debug")
        return []
    log(f"wrote the report ({len(paths)} files) to {paths[0].parent if paths else out_dir}")
    return paths


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok or no matplotlib, 2 bad input)."""
    parser = argparse.ArgumentParser(prog="python -m nas.report",
                                     description="Plot a search run: probabilities, curves, tau, derived cells.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of train_search.py")
    parser.add_argument("--out", metavar="DIR", help=f"where to write the pictures (default: RUN_DIR/{REPORT_DIR})")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        paths = write_report(args.run_dir, args.out)
    except VizDependencyMissing:
        print(f"note: no report written: matplotlib is not installed; {INSTALL_HINT}")
        return 0
    except (UserError, OSError) as e:
        if args.debug:
            raise
        if isinstance(e, OSError):  # an unwritable or full --out: one line, like any other bad input
            target = e.filename or args.out or Path(args.run_dir) / REPORT_DIR
            e = UserError(f"cannot write the report to {str(target)!r}: {e.strerror or e}; "
                          "choose a writable --out")
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} files to {paths[0].parent}")
    for path in paths:
        print(f"  {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
