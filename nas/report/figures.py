"""The figures of ``nas.report``, one function each; every one returns a ``Figure``.

Kept apart from the loading and the CLI so that each drawing reads on its own.
Every function takes the ``Figure`` class (matplotlib is imported lazily by
``nas.report``) and a ``SearchRun``; nothing here touches pyplot.
"""
from __future__ import annotations

from typing import Any

from ..layers.op_traits import ops_with

# Node fill colours of the cell diagrams, as DARTS's plots: inputs green, output yellow.
INPUT_COLOR, NODE_COLOR, OUTPUT_COLOR = "#c1e1c1", "#cfe2f3", "#fff2a8"
WRAP = 8  # columns per row of a cell diagram


def _integer_epochs(*axes) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _cell_name(group: str) -> str:
    return {"cell": "cell", "normal": "normal cell", "reduce": "reduction cell"}.get(group, group)


def _grid(count: int, max_cols: int) -> tuple[int, int]:
    cols = min(count, max_cols)
    return -(-count // cols), cols


# Why an op more likely than the derived one was not derived (``nas.report.DerivationMarks.passed_over``).
REASONS = {"excluded": "excluded", "rule": "never by rule", "capped": "capped"}
DERIVED_COLOR, PASSED_COLOR = "#d62728", "#555555"


def _edge_title(edge: str, marks, e: int, ops: list[str], final: list[float]) -> tuple[str, str | None]:
    """A subplot title for edge ``e``: its derived op(s), and the more likely op it passed over and why."""
    if marks is None:
        best = max(range(len(ops)), key=final.__getitem__)
        return f"edge {edge}: {ops[best]} ({final[best]:.2f})", ops[best]
    if marks.dropped[e]:
        title = f"edge {edge}: dropped by the rule"
        main = None
    else:
        title = f"edge {edge}: " + "\n+ ".join(f"{ops[k]} ({final[k]:.2f})" for k in marks.derived[e])
        main = ops[marks.derived[e][0]]
    top = marks.top[e]
    if top in marks.passed_over[e]:
        title += f"\ntop: {ops[top]} ({final[top]:.2f}, {REASONS[marks.passed_over[e][top]]})"
    return title, main


def probabilities_figure(Figure, run, group: str, colors: dict[str, Any], marks=None):
    """One small plot per edge: each op's probability over the epochs, a shared legend on top.

    With ``marks`` (``nas.report.DerivationMarks`` of the last epoch) the bold line and the title
    are the op(s) the genotype derived on the edge, and a more likely op says why it was not derived.
    """
    epochs = [m["epoch"] for m in run.metrics]
    probs = [m["probabilities"][group] for m in run.metrics]  # [epoch][edge][op]
    edges, ops = run.edge_names[group], run.op_names
    rows, cols = _grid(len(edges), 3 if len(edges) <= 6 else 5)
    fig = Figure(figsize=(3.5 * cols, 2.9 * rows + 1.0), layout="constrained")
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[0.18] + [1.0] * rows)
    top = max(max(max(row) for row in epoch) for epoch in probs)
    y_max = 1.0 if top > 0.5 else 0.55  # a fixed, honest scale: 1.0 once an op dominates
    marker = "o" if len(epochs) <= 15 else None  # a line of one or two points is invisible
    axes = []
    for e, edge in enumerate(edges):
        ax = fig.add_subplot(grid[1 + e // cols, e % cols], sharex=axes[0] if axes else None,
                             sharey=axes[0] if axes else None)
        axes.append(ax)
        final = probs[-1][e]
        bold = (set(marks.derived[e]) if marks is not None
                else {max(range(len(ops)), key=final.__getitem__)})
        for k, op in enumerate(ops):
            ax.plot(epochs, [p[e][k] for p in probs], color=colors[op], lw=2.4 if k in bold else 1.2,
                    marker=marker, ms=3, label=op, zorder=3 if k in bold else 2)
        ax.axhline(1.0 / len(ops), color="black", lw=0.8, ls=":", zorder=1)
        title, main = _edge_title(edge, marks, e, ops, final)
        ax.set_title(title, color=colors[main] if main else PASSED_COLOR, fontweight="bold",
                     fontsize=9.5 if "\n" in title else None)
        ax.set_ylim(0, y_max)
        _integer_epochs(ax)
        if e % cols == 0:
            ax.set_ylabel("probability")
        if e // cols == rows - 1 or e + cols >= len(edges):
            ax.set_xlabel("epoch")
    legend_ax = fig.add_subplot(grid[0, :])
    legend_ax.axis("off")
    from matplotlib.lines import Line2D

    # Fresh handles: the first plot's own lines would carry its bold "derived" width into the legend.
    handles = [Line2D([], [], color=colors[op], lw=2) for op in ops] + [Line2D([], [], color="black", lw=0.8, ls=":")]
    labels = ops + [f"uniform 1/{len(ops)}"]
    legend_ax.legend(handles, labels, loc="center", ncol=min(len(labels), 9), frameon=False)
    what = ("bold = derived in the genotype of the last epoch" if marks is not None
            else "bold = most likely now")
    fig.suptitle(f"{_cell_name(group)}: op probabilities per edge (softmax of the logits; {what})\n{run.title()}")
    return fig


def heatmap_figure(Figure, run, group: str, marks=None):
    """The last epoch's probabilities as an edges x ops table.

    With ``marks`` (``nas.report.DerivationMarks``): the op(s) the genotype derived are boxed in red,
    every more likely op gets a dashed grey box and its reason, excluded ops' columns and dropped
    edges' rows are hatched. Without: the most likely op of each edge is boxed.
    """
    from matplotlib.patches import Rectangle

    probs = run.metrics[-1]["probabilities"][group]
    edges, ops = run.edge_names[group], run.op_names
    fig = Figure(figsize=(1.1 * len(ops) + 3.0, 0.46 * len(edges) + 2.6), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(probs, cmap="YlGnBu", vmin=0.0, vmax=1.0, aspect="auto")
    ax.grid(False)
    hatch = dict(fill=False, hatch="///", edgecolor="#9a9a9a", lw=0, zorder=1)
    if marks is not None:
        for k in marks.excluded:
            ax.add_patch(Rectangle((k - 0.5, -0.5), 1, len(edges), **hatch))
        for e, dropped in enumerate(marks.dropped):
            if dropped:
                ax.add_patch(Rectangle((-0.5, e - 0.5), len(ops), 1, **hatch))
    for e, row in enumerate(probs):
        boxed = marks.derived[e] if marks is not None else [max(range(len(row)), key=row.__getitem__)]
        passed = marks.passed_over[e] if marks is not None else {}
        for k, p in enumerate(row):
            text = f"{p:.2f}" + (f"\n{REASONS[passed[k]]}" if k in passed else "")
            ax.text(k, e, text, ha="center", va="center", fontsize=8.5 if k not in passed else 7.5,
                    color="white" if p > 0.55 else "black", fontweight="bold" if k in boxed else "normal",
                    linespacing=0.95, zorder=3)
        for k in boxed:
            ax.add_patch(Rectangle((k - 0.5, e - 0.5), 1, 1, fill=False, edgecolor=DERIVED_COLOR, lw=2.2,
                                   clip_on=False, zorder=4))
        for k in passed:
            ax.add_patch(Rectangle((k - 0.45, e - 0.45), 0.9, 0.9, fill=False, edgecolor=PASSED_COLOR, lw=1.2,
                                   ls="--", zorder=4))
    excluded = set(marks.excluded) if marks is not None else set()
    ax.set_xticks(range(len(ops)), [f"{op} (excluded)" if k in excluded else op for k, op in enumerate(ops)],
                  rotation=35, ha="right")
    dropped = marks.dropped if marks is not None else [False] * len(edges)
    ax.set_yticks(range(len(edges)), [f"{edge} (dropped)" if d else edge for edge, d in zip(edges, dropped)])
    for label, d in zip(ax.get_yticklabels(), dropped):
        if d:
            label.set_color(PASSED_COLOR)
    ax.set_xlabel("op")
    ax.set_ylabel("edge (to <- from)" if all("<-" in edge for edge in edges) else "layer")
    fig.colorbar(image, ax=ax, label="probability", shrink=0.9)
    if marks is None:
        key = "red box: most likely op"
    else:
        key = (f"red box: derived (genotype of epoch {run.metrics[-1]['epoch']}); dashed: more likely, not derived"
               + ("\nhatched: excluded op / edge dropped by the rule" if marks.excluded or any(marks.dropped) else ""))
    fig.suptitle(f"{_cell_name(group)}: op probabilities of the last epoch\n{key}\n{run.title()}", fontsize=10.5)
    return fig


def curves_figure(Figure, run, conv: dict):
    """Losses, accuracies and the convergence signals; the title states the final state in numbers."""
    fig = Figure(figsize=(12, 8), layout="constrained")
    (loss_ax, acc_ax), (ent_ax, top_ax) = fig.subplots(2, 2, sharex=True)
    styles = {"train": ("tab:blue", "-", None), "arch": ("tab:orange", "-", None), "val": ("tab:green", "-", "o"),
              "supernet_val": ("tab:olive", "--", "s")}
    for ax, kind, label in ((loss_ax, "loss", "cross-entropy loss"), (acc_ax, "acc", "accuracy (%)")):
        for split, (color, ls, marker) in styles.items():
            epochs, values = run.series(f"{split}_{kind}")
            if epochs:
                ax.plot(epochs, values, color=color, ls=ls, marker=marker if len(epochs) < 40 else None, ms=3,
                        label={"train": "train (weight steps, sampled)", "arch": "arch (arch steps, sampled)",
                               "val": "val: derived genotype (supernet weights)",
                               "supernet_val": "val: soft supernet (softmax-weighted)"}[split])
        ax.set_ylabel(label)
        ax.legend(loc="best")
    loss_ax.set_title("loss")
    acc_ax.set_title("accuracy")
    epochs = conv["epochs"]
    group_colors = ["tab:purple", "tab:brown", "tab:cyan", "tab:olive"]
    for ax, key, label in ((ent_ax, "entropy", "entropy / log(#ops)"), (top_ax, "max_prob", "top op probability")):
        for (group, stats), color in zip(conv[key].items(), group_colors):
            ax.plot(epochs, [s[0] for s in stats], color=color, lw=2, label=f"{group}: mean over edges")
            ax.fill_between(epochs, [s[1] for s in stats], [s[2] for s in stats], color=color, alpha=0.18,
                            label=f"{group}: min..max over edges")
        ax.set_ylim(0, 1.02)
        ax.set_ylabel(label)
        ax.set_xlabel("epoch")
    ent_ax.set_title("architecture entropy per edge (1 = uniform, 0 = decided)")
    top_ax.axhline(1.0 / len(run.op_names), color="black", lw=0.8, ls=":", label=f"uniform 1/{len(run.op_names)}")
    if conv["changes"]:  # a rug along the bottom: dense early, absent late = the choice has settled
        top_ax.plot(conv["changes"], [0.03] * len(conv["changes"]), "|", color="tab:red", ms=14, mew=1.5,
                    label=f"derived cell changed ({len(conv['changes'])} epochs)")
    top_ax.set_title("top probability per edge (red ticks: the derived cell changed)")
    ent_ax.legend(loc="lower left")
    top_ax.legend(loc="upper left")
    _integer_epochs(loss_ax, acc_ax, ent_ax, top_ax)
    last = run.metrics[-1]["epoch"]
    if not conv["changes"]:
        stable = "derived cell never changed"
    elif conv["changes"][-1] == last:
        stable = f"derived cell changed in the last epoch ({last}): not settled"
    else:
        stable = f"derived cell stable for the last {last - conv['changes'][-1] + 1} epochs (since epoch {conv['changes'][-1]})"
    tops = ", ".join(f"{g} {s[-1][0]:.2f}" for g, s in conv["max_prob"].items())
    ents = ", ".join(f"{g} {s[-1][0]:.2f}" for g, s in conv["entropy"].items())
    fig.suptitle(f"{run.title()}\nat epoch {last}: mean top probability {tops} (uniform "
                 f"{1 / len(run.op_names):.2f}); entropy/log(#ops) {ents}\n{stable}")
    return fig


def tau_figure(Figure, run):
    """The Gumbel-softmax temperature per epoch, and the weights' learning rate beside it."""
    has_lr = bool(run.series("lr")[0])
    fig = Figure(figsize=(10 if has_lr else 5.5, 3.6), layout="constrained")
    axes = fig.subplots(1, 2 if has_lr else 1, squeeze=False)[0]
    epochs, taus = run.series("tau")
    axes[0].plot(epochs, taus, color="tab:red", marker="o" if len(epochs) <= 30 else None, ms=3)
    axes[0].set_title(f"temperature tau: {taus[0]:.3g} -> {taus[-1]:.3g}")
    axes[0].set_ylabel("tau")
    axes[0].set_ylim(bottom=0)
    if has_lr:
        epochs_lr, lrs = run.series("lr")
        axes[1].plot(epochs_lr, lrs, color="tab:blue", marker="o" if len(epochs_lr) <= 30 else None, ms=3)
        axes[1].set_title(f"weight learning rate: {lrs[0]:.3g} -> {lrs[-1]:.3g}")
        axes[1].set_ylabel("learning rate")
        axes[1].set_ylim(bottom=0)
    for ax in axes:
        ax.set_xlabel("epoch")
        _integer_epochs(ax)
    fig.suptitle(f"schedules | {run.title()}", fontsize=11)
    return fig


def _node_order(edges: list[tuple[str, str, str]], extra_nodes=()) -> list[str]:
    # DARTS inputs c_{k-2}, c_{k-1} first, then numbered nodes in order, then any other name in order of
    # first appearance (DARTS's output c_{k}; a chain of layers), which every space lists topologically.
    first_seen = {n: i for i, n in reversed(list(enumerate(n for u, v, _ in edges for n in (u, v))))}

    def key(name: str):
        if name.startswith("c_{k-"):
            return (0, -int(name[5:-1]) if name[5:-1].isdigit() else 0)
        return (1, int(name)) if name.isdigit() else (2, first_seen.get(name, 0))
    return sorted({n for u, v, _ in edges for n in (u, v)} | set(extra_nodes), key=key)


def _is_input(name: str, index: int) -> bool:
    return index == 0 or name.startswith("c_{k-")


def cell_layout(edges: list[tuple[str, str, str]], extra_nodes=()) -> tuple[list[str], dict[str, tuple[float, float]]]:
    """Nodes in order and their positions: a column per longest-path depth, nodes of a column stacked.

    The output (the last node) gets a column of its own after every other node.
    """
    nodes = _node_order(edges, extra_nodes)
    depth: dict[str, int] = {}
    for i, n in enumerate(nodes[:-1]):  # the order is topological: every edge goes to a later node
        preds = [depth[u] for u, v, _ in edges if v == n and u in depth]
        depth[n] = 0 if _is_input(n, i) else 1 + max(preds, default=0)
    depth[nodes[-1]] = 1 + max(depth.values(), default=0)
    columns: dict[int, list[str]] = {}
    for n in nodes:
        columns.setdefault(depth[n], []).append(n)
    # A long chain (a macro space's layers) snakes through rows of WRAP columns, every other row
    # right to left, so that it neither makes one very wide row nor needs an edge across the figure.
    row_height = 1.7 * max(len(m) for m in columns.values()) + 1.2
    pos = {}
    for d, members in columns.items():
        row, col = divmod(d, WRAP)
        x = 2.2 * (col if row % 2 == 0 else WRAP - 1 - col)
        for i, n in enumerate(members):
            pos[n] = (x, 1.7 * ((len(members) - 1) / 2 - i) - row_height * row)
    return nodes, pos


def _label(name: str) -> str:
    return f"${name}$" if "{" in name else name  # c_{k-1} as mathtext


def _bezier(p1, p2, rad: float, t: float) -> tuple[float, float]:
    # matplotlib's arc3: a quadratic Bezier whose control point is the midpoint moved by rad * (dy, -dx).
    (x1, y1), (x2, y2) = p1, p2
    cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
    a, b, c = (1 - t) ** 2, 2 * (1 - t) * t, t ** 2
    return a * x1 + b * cx + c * x2, a * y1 + b * cy + c * y2


def _route(p1, p2, obstacles, labels, radius: float) -> float:
    """The arc3 curvature of an edge: straight if that clears the other nodes and labels, else the gentlest bend that does."""
    best, best_cost = 0.0, float("inf")
    for rad in (0.0, 0.25, -0.25, 0.4, -0.4, 0.6, -0.6):
        points = [_bezier(p1, p2, rad, t / 20) for t in range(2, 19)]
        hits = sum(1 for (x, y) in points for (ox, oy) in obstacles if (x - ox) ** 2 + (y - oy) ** 2 < (radius + 0.2) ** 2)
        mx, my = _bezier(p1, p2, rad, 0.5)
        clashes = sum(1 for (lx, ly) in labels if abs(mx - lx) < 1.35 and abs(my - ly) < 0.4)
        cost = 10 * hits + 4 * clashes + abs(rad)
        if cost < best_cost:
            best, best_cost = rad, cost
    return best


def cell_figure(Figure, run, kind: str, edges: list[tuple[str, str, str]], colors: dict[str, Any]):
    """The derived cell: nodes as circles, one arrow per edge coloured and labelled by its op."""
    from matplotlib.patches import Circle, FancyArrowPatch

    names = [n for group in run.edge_names.values() for e in group for n in e.split("<-")]
    extra = [n for n in names if n.isdigit()] if all(u.isdigit() and v.isdigit() for u, v, _ in edges) else []
    nodes, pos = cell_layout(edges, extra)  # NB201: keep a node whose inputs are all `none`
    radius = 0.4
    routes, labels, extent = [], [], list(pos.values())
    for u, v, op in edges:
        obstacles = [pos[n] for n in nodes if n not in (u, v)]
        rad = _route(pos[u], pos[v], obstacles, labels if op != "concat" else [], radius)
        if op != "concat":
            labels.append(_bezier(pos[u], pos[v], rad, 0.5))
        routes.append(rad)
        extent += [_bezier(pos[u], pos[v], rad, t / 10) for t in range(11)]
    xs, ys = [p[0] for p in extent], [p[1] for p in extent]
    x_lo, x_hi, y_lo, y_hi = min(xs) - 0.9, max(xs) + 0.9, min(ys) - 0.7, max(ys) + 0.7
    fig = Figure(figsize=(max(6.0, 1.05 * (x_hi - x_lo)), max(2.8, 1.05 * (y_hi - y_lo) + 0.6)), layout="constrained")
    ax = fig.add_subplot()
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    has_input = {v for _, v, _ in edges}
    circles = {}
    for i, n in enumerate(nodes):
        is_input = _is_input(n, i)
        fill = OUTPUT_COLOR if i == len(nodes) - 1 else INPUT_COLOR if is_input else NODE_COLOR
        circles[n] = Circle(pos[n], radius, facecolor=fill, edgecolor="black", lw=1.2, zorder=3,
                            ls="-" if n in has_input or is_input else "--")
        ax.add_patch(circles[n])
        ax.text(*pos[n], _label(n), ha="center", va="center", fontsize=12, zorder=4)
    for (u, v, op), rad in zip(edges, routes):
        concat = op == "concat"
        color = "#888888" if concat else colors.get(op, "black")
        ax.add_patch(FancyArrowPatch(pos[u], pos[v], patchA=circles[u], patchB=circles[v],
                                     connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>", mutation_scale=14,
                                     color=color, lw=1.2 if concat else 2.0, ls="--" if concat else "-", zorder=2))
        if not concat:
            ax.text(*_bezier(pos[u], pos[v], rad, 0.5), op, ha="center", va="center", fontsize=9, color=color,
                    zorder=5, bbox=dict(boxstyle="round,pad=0.2", fc="white", ec=color, lw=0.8, alpha=0.95))
    kind_name = {"cell": "derived cell", "normal": "derived normal cell", "reduce": "derived reduction cell"}
    zero_ops = ops_with(run.space.op_traits(), zero=True)
    notes = [f"edges with op {' or '.join(repr(n) for n in zero_ops)} are not drawn"] if zero_ops else []
    if any(op == "concat" for *_, op in edges):
        notes.append("dashed: concatenated into the output")
    if any(n not in has_input and not _is_input(n, i) for i, n in enumerate(nodes)):
        notes.append("dashed node: no input (outputs zeros)")
    ax.set_title(f"{kind_name.get(kind, kind)} (epoch {run.metrics[-1]['epoch']})\n{'; '.join(notes)}", fontsize=11)
    return fig


def cell_dot(kind: str, edges: list[tuple[str, str, str]]) -> str:
    """The cell as Graphviz text (``dot -Tpng cell.dot``): a node line per node, an edge line per edge."""
    def q(name: str) -> str:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'

    nodes = _node_order(edges)
    lines = [f"digraph {q(kind)} {{", "  rankdir=LR;",
             '  node [shape=circle, style=filled, fontname="Helvetica"];',
             '  edge [fontname="Helvetica", fontsize=10];']
    for i, n in enumerate(nodes):
        color = OUTPUT_COLOR if i == len(nodes) - 1 else INPUT_COLOR if _is_input(n, i) else NODE_COLOR
        lines.append(f"  {q(n)} [fillcolor={q(color)}];")
    for u, v, op in edges:
        style = 'style=dashed, color="gray50"' if op == "concat" else f"label={q(op)}"
        lines.append(f"  {q(u)} -> {q(v)} [{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def settling_figure(Figure, run, probability: float = 0.5):
    """Each edge's top probability over the epochs (a dot where the edge counted as settled), the
    threshold as a dashed line; one panel per group, the run's settling summary as the title
    (``nas.settling``)."""
    from ..engine.settling import summary_line

    rows = [m for m in run.metrics if "settling" in m]
    epochs = [m["epoch"] for m in rows]
    groups = list(rows[-1]["settling"]["edges"])
    fig = Figure(figsize=(6.5 * len(groups), 4.2), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, group in zip(axes, groups):
        names = run.edge_names.get(group) or []
        count = len(rows[-1]["settling"]["edges"][group]["top_p"])
        for e in range(count):
            top = [m["settling"]["edges"][group]["top_p"][e] for m in rows]
            settled = [m["settling"]["edges"][group]["settled"][e] for m in rows]
            name = names[e] if e < len(names) else f"edge {e}"
            line, = ax.plot(epochs, top, lw=1.3, label=f"{name}: {rows[-1]['settling']['edges'][group]['top_op'][e]}")
            ax.plot([x for x, s in zip(epochs, settled) if s], [p for p, s in zip(top, settled) if s], "o",
                    color=line.get_color(), ms=3.5)
        ax.axhline(probability, color="black", lw=1, ls="--", label=f"threshold {probability:g}")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("epoch")
        ax.set_ylabel("top probability (derivable ops)")
        last = rows[-1]["settling"]["edges"][group]
        ax.set_title(f"{_cell_name(group)}: {sum(last['settled'])}/{count} settled (dots: settled epochs)")
        ax.legend(loc="lower right", fontsize=7, ncol=2 if count > 8 else 1)
        _integer_epochs(ax)
    fig.suptitle(f"{run.title()}\n{summary_line(rows[-1]['settling'], rows[-1]['epoch'])}", fontsize=11)
    return fig


BENCHMARK_DATASETS = (("cifar10", "CIFAR-10", "tab:blue"), ("cifar100", "CIFAR-100", "tab:orange"),
                      ("ImageNet16-120", "ImageNet16-120", "tab:green"))


def benchmark_figure(Figure, run):
    """The NAS-Bench-201 benchmark accuracy (hp=200) of each epoch's derived cell: test solid, valid dashed;
    epochs whose cell the benchmark file lacks are gaps."""
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.subplots()
    epochs = [m["epoch"] for m in run.metrics]
    for key, label, color in BENCHMARK_DATASETS:
        for split, ls in (("test", "-"), ("valid", "--")):
            values = [(m.get("benchmark") or {}).get(key, {}).get(split) for m in run.metrics]
            ax.plot(epochs, [float("nan") if v is None else v for v in values], ls=ls, color=color,
                    marker="o" if len(epochs) <= 30 else None, ms=3, label=f"{label} {split}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("benchmark accuracy of the derived cell (%)")
    ax.legend(loc="best", fontsize=8, ncol=3)
    _integer_epochs(ax)
    last = run.metrics[-1].get("benchmark")
    final = f"last epoch: CIFAR-10 test {last['cifar10']['test']:.2f}%" if last else "last epoch: not in the benchmark"
    fig.suptitle(f"NAS-Bench-201 benchmark (hp=200, mean over its seeds) | {run.title()}\n{final}", fontsize=11)
    return fig
