"""The search report, the TensorBoard logger and the examples: every file written, valid, and the numbers sane."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import search_spaces  # noqa: F401  (registers the spaces)
from nas.cli.build import build_searcher
from nas.cli.run_command import open_run_dir
from nas.config import build_config
from nas.spaces.genotype import load_genotype

import matplotlib  # noqa: E402  (the test extra includes the viz extra)
import matplotlib.image  # noqa: E402
from nas.report import report  # noqa: E402
from nas.report.tensorboard import TensorBoardLogger, TensorBoardUnavailable  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# One thread: these models are tiny, and on a shared machine extra OpenMP threads mostly wait for each other.
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# eval_every=2: the val metrics are missing at epoch 1, as in a real run with sparse evaluation.
TINY = ["data.dataset=synthetic", "data.synthetic_size=32", "data.image_size=8", "data.batch_size=16",
        "model.C=4", "model.N=1", "search.epochs=3", "search.eval_every=2", "search.arch_lr=0.01", "seed=3",
        "deterministic=true"]
SPACES = {"nb201": [], "darts": ["model.space=darts", "data.image_size=16"]}


def run_python(*args, timeout=120):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def make_run(tmp_path_factory):
    """Finished 3-epoch searches (config.yaml, metrics.jsonl, genotype.yaml), one per space, made once."""
    made = {}

    def make(space: str) -> Path:
        if space not in made:
            cfg = build_config({}, TINY + SPACES[space])
            out = tmp_path_factory.mktemp(f"run_{space}")
            open_run_dir(out, cfg, resume=False)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                build_searcher(cfg, out, log=lambda s: None).run()
            finally:
                torch.set_num_threads(threads)
            made[space] = out
        return made[space]
    return make


@pytest.fixture(params=sorted(SPACES))
def search_run(request, make_run):
    return make_run(request.param)


@pytest.fixture
def nb201_run(make_run):
    return make_run("nb201")


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 2000, path
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4) and image.shape[0] >= 250 and image.shape[1] >= 400, \
        (path, image.shape)
    assert image[..., :3].std() > 0.01, f"{path} is blank"


def parse_dot(text: str) -> tuple[set, list]:
    assert text.startswith("digraph ") and text.rstrip().endswith("}")
    edges = re.findall(r'^\s*"([^"]+)"\s*->\s*"([^"]+)"\s*\[(.*)\];$', text, flags=re.M)
    nodes = set(re.findall(r'^\s*"([^"]+)"\s*\[fillcolor', text, flags=re.M))
    return nodes, edges


def test_report_writes_every_figure_and_cell(search_run, tmp_path):
    out = tmp_path / "report"
    written = report.write_report(search_run, out)
    space, genotype = load_genotype(search_run / "genotype.yaml")
    groups = list(space.edge_names())
    cells = space.cell_graphs(genotype)
    expected = {"curves.png", "tau.png", "settling.png"} | {f"probabilities_{g}.png" for g in groups} | \
        {f"heatmap_{g}.png" for g in groups} | {f"cell_{k}.png" for k in cells} | {f"cell_{k}.dot" for k in cells}
    assert {p.name for p in written} == expected == {p.name for p in out.iterdir()}
    for path in written:
        if path.suffix == ".png":
            assert_png(path)
    for kind, graph in cells.items():
        nodes, edges = parse_dot((out / f"cell_{kind}.dot").read_text())
        assert sorted((u, v) for u, v, _ in edges) == sorted((u, v) for u, v, _ in graph)
        assert nodes == {n for u, v, _ in graph for n in (u, v)}
        labelled = sorted(re.search(r'label="([^"]+)"', a).group(1) for *_, a in edges if "label=" in a)
        assert labelled == sorted(op for *_, op in graph if op != "concat")
    if space.name == "darts":  # 8 op edges (none left out) and 4 concat edges per cell
        assert all(sum(op == "concat" for *_, op in g) == 4 for g in cells.values())


def test_report_cli_writes_to_the_default_directory(nb201_run):
    proc = run_python("-m", "nas.report", str(nb201_run))
    assert proc.returncode == 0, proc.stderr
    assert "curves.png" in proc.stdout and (nb201_run / "report" / "curves.png").is_file()


def test_report_of_a_running_search_ignores_a_half_written_line(nb201_run, tmp_path):
    search_run = nb201_run
    lines = (search_run / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    (tmp_path / "config.yaml").write_text((search_run / "config.yaml").read_text())
    run = report.load_run(tmp_path)  # no genotype.yaml yet: the last metrics line gives the genotype
    assert [m["epoch"] for m in run.metrics] == [1, 2]
    assert run.space.format(run.genotype) == json.loads(lines[1])["genotype"]
    conv = report.convergence(run)
    for stats in conv["max_prob"].values():
        assert all(1 / len(run.op_names) - 1e-6 <= mean <= 1 for mean, _, _ in stats)


def test_bad_run_dir_is_one_line_and_exit_2(tmp_path, capsys):
    proc = run_python("-m", "nas.report", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert report.main([str(tmp_path)]) == 2  # exists, but no metrics.jsonl
    assert "no metrics.jsonl" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text("")
    assert report.main([str(tmp_path)]) == 2
    assert "no finished epoch" in capsys.readouterr().err


def test_missing_matplotlib_is_a_note_not_a_failure(nb201_run, tmp_path, monkeypatch, capsys):
    search_run = nb201_run
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib` now raises ImportError
    with pytest.raises(ImportError, match=re.escape('pip install -e ".[viz]"')):
        report.write_report(search_run, tmp_path)
    assert report.main([str(search_run), "--out", str(tmp_path)]) == 0
    assert 'pip install -e ".[viz]"' in capsys.readouterr().out
    logged = []
    assert report.try_write_report(search_run, tmp_path, log=logged.append) == [] and len(logged) == 1


def test_tensorboard_logger_writes_scalars_and_probabilities(search_run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    space, _ = load_genotype(search_run / "genotype.yaml")
    metrics = [json.loads(line) for line in (search_run / "metrics.jsonl").read_text().splitlines()]
    with TensorBoardLogger(tmp_path / "tb", space.edge_names(), space.op_names) as logger:
        for m in metrics:
            logger.log_epoch(m)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {"loss/train", "loss/arch", "loss/val", "accuracy/train", "accuracy/arch", "accuracy/val",
                "schedule/tau", "schedule/lr", "entropy/mean", "time/epoch_time"}
    expected |= {f"probabilities/{g}/{e}/{op}" for g, edges in space.edge_names().items() for e in edges
                 for op in space.op_names}
    assert expected <= tags
    taus = events.Scalars("schedule/tau")
    assert [s.step for s in taus] == [1, 2, 3] and taus[0].value == pytest.approx(metrics[0]["tau"])
    assert [s.step for s in events.Scalars("loss/val")] == [2, 3]  # epoch 1 had no evaluation: skipped
    group, edge = next(iter(space.edge_names().items()))
    last = events.Scalars(f"probabilities/{group}/{edge[0]}/{space.op_names[1]}")[-1]
    assert last.value == pytest.approx(metrics[-1]["probabilities"][group][0][1], abs=1e-6)
    mean_entropy = events.Scalars("entropy/mean")[-1].value
    assert 0 < mean_entropy <= math.log(len(space.op_names)) + 1e-6


def test_tensorboard_missing_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(TensorBoardUnavailable, match="pip install tensorboard") as info:
        TensorBoardLogger(tmp_path, {"cell": ["1<-0"]}, ["none"])
    assert isinstance(info.value, ImportError)


def _numbers(pattern: str, text: str) -> list[float]:
    found = [float(x) for x in re.findall(pattern, text)]
    assert found, (pattern, text)
    return found


def test_example_gumbel_max(tmp_path):
    proc = run_python("examples/gumbel_max.py", "--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    chi2 = _numbers(r"chi-square .*: ([\d.]+) with 4 dof", proc.stdout)
    assert len(chi2) == 2 and max(chi2) < 20.0  # 20.0 is chi-square(4 dof)'s 99.95% quantile
    assert _numbers(r"differs from argmax\(logits \+ g\) in (\d+) of", proc.stdout) == [0.0] * 4
    assert_png(tmp_path / "gumbel_max.png")


def test_example_temperature(tmp_path):
    proc = run_python("examples/temperature.py", "--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if re.match(r"\s*[\d.]+\s+0\.\d{4} ", line)]
    assert [float(r[0]) for r in rows] == [10, 3, 1, 0.3, 0.1, 0.03, 0.01]
    p = [math.exp(v) / (math.exp(1) + 1 + math.exp(-1)) for v in (1.0, 0.0, -1.0)]
    for r in rows:
        assert float(r[4]) < 5.0, r  # every tau: the hard average within 5 standard errors of softmax
    assert float(rows[0][5]) < 0.45  # tau 10: soft samples average near uniform, not p0 = 0.665
    assert abs(float(rows[-1][5]) - p[0]) < 0.02  # tau 0.01: soft samples are one-hot
    for name in ("temperature_means.png", "temperature_samples.png"):
        assert_png(tmp_path / name)


def test_example_straight_through_classifier(tmp_path):
    proc = run_python("examples/straight_through_classifier.py", "--quick", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "exactly one-hot: True" in proc.stdout and "deterministic: True" in proc.stdout
    train_acc = _numbers(r"train accuracy \(eval mode, argmax codes\): ([\d.]+)%", proc.stdout)[0]
    eval_acc = _numbers(r"eval accuracy \(test set, eval mode, argmax codes\): ([\d.]+)%", proc.stdout)[0]
    assert train_acc > 85.0 and eval_acc > 80.0, proc.stdout
    assert_png(tmp_path / "straight_through_classifier.png")


def _forced_run(tmp_path, extra, set_logits):
    """A one-epoch run whose logits were set by hand and left alone (warm-up): a known genotype."""
    cfg = build_config({}, TINY + ["search.epochs=1", "search.warmup_epochs=1", "search.report=false"] + extra)
    open_run_dir(tmp_path, cfg, resume=False)
    searcher = build_searcher(cfg, tmp_path, log=lambda s: None)
    with torch.no_grad():
        set_logits(searcher.supernet.architecture.logits)
    searcher.run()
    return report.load_run(tmp_path)


def _red_boxes(fig):
    from matplotlib.colors import to_rgba
    from nas.report.figures import DERIVED_COLOR

    return {(round(p.get_y() + 0.5), round(p.get_x() + 0.5)) for p in fig.axes[0].patches
            if p.get_edgecolor() == to_rgba(DERIVED_COLOR)}


def test_report_marks_the_derived_op_not_the_excluded_or_capped_one(tmp_path):
    def logits(l):
        table = l["cell"]  # none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3
        table.mul_(0.01)[:, 3] += 1.0
        table[[0, 2, 5], 0] += 2.0  # `none` most likely on three edges
        table[[1, 4], 1] += 1.5     # skip most likely on two edges, one over the cap

    run = _forced_run(tmp_path, ["model.derive_exclude=[none]", "model.max_skip=1"], logits)
    marks = report.derivation_marks(run)["cell"]
    ops = run.op_names
    genotype_ops = run.genotype.edge_ops()
    assert genotype_ops.count("skip_connect") == 1 and "none" not in genotype_ops
    assert marks.derived == [[ops.index(op)] for op in genotype_ops]
    assert marks.excluded == [0] and marks.dropped == [False] * 6
    assert [marks.top[e] for e in (0, 2, 5)] == [0, 0, 0]  # the figure's old "most likely" box
    for e in (0, 2, 5):
        assert marks.passed_over[e] == {0: "excluded"} and marks.derived[e] == [3]
    capped = [e for e in (1, 4) if marks.derived[e] != [1]]
    assert len(capped) == 1 and marks.passed_over[capped[0]] == {1: "capped"}
    from nas.report.figures import heatmap_figure
    from matplotlib.figure import Figure
    assert _red_boxes(heatmap_figure(Figure, run, "cell", marks)) == {(e, d[0]) for e, d in enumerate(marks.derived)}


def test_report_marks_darts_dropped_edges_and_an_edge_with_two_ops(tmp_path):
    def logits(l):
        for table in l.values():  # none, max_pool, avg_pool, skip, sep3, sep5, dil3, dil5
            table.mul_(0.01)[:, 4] += 1.0
            table[2::2, 0] += 3.0
            table[2:, 3] += 1.5
            table[0, 7] += 3.0  # node 2: both kept pairs on edge 0 under the gdas rule
            table[0, 4] += 1.5
            table[1, 4] -= 1.0

    run = _forced_run(tmp_path, ["model.space=darts", "data.image_size=16", "model.derivation=gdas",
                                 "model.max_skip=1"], logits)
    marks = report.derivation_marks(run)
    for kind in ("normal", "reduce"):
        m = marks[kind]
        kept = {}
        for k, (op, j) in enumerate(getattr(run.genotype, kind)):
            kept.setdefault(search_spaces.darts.EDGES.index((k // 2 + 2, j)), []).append(run.op_names.index(op))
        assert m.derived == [sorted(kept.get(e, [])) for e in range(14)]
        assert m.derived[0] == [4, 7] and m.dropped[1] and sum(not d for d in m.dropped) < 8
        assert all(m.passed_over[e] == {} for e in range(14) if m.dropped[e])
        assert sum(1 for e in range(14) for k in m.derived[e] if k == 3) == 1  # one skip: the cap
        reasons = {(k, reason) for p in m.passed_over for k, reason in p.items()}
        assert (3, "capped") in reasons and reasons <= {(3, "capped"), (0, "rule")}
        # `none` is never derived by the DARTS rules: where it beats a kept op, that is the reason
        assert report._ops_the_rule_never_derives(run.space, {"normal": (14, 8), "reduce": (14, 8)}) == {"none"}


def test_report_marks_mobilenet_skips_where_the_derivation_put_them(tmp_path):
    """The arch_def string drops skip layers; the marks still show which layer derived a skip."""
    def logits(l):
        table = l["layers"]  # skip most likely on every layer that has one, each by another margin; the cap keeps one
        table.mul_(0.01)[:, 6] += 2.0 + 0.1 * torch.arange(len(table))

    run = _forced_run(tmp_path, ["model.space=mobilenet", "model.C=8", "model.N=2", "data.image_size=16",
                                 "model.max_skip=1"], logits)
    assert run.edge_names["layers"][7:] == ["s1.b1", "s2.b1", "s3.b1", "s4.b1", "s5.b1"]
    marks = report.derivation_marks(run)["layers"]
    skip = run.op_names.index("skip")
    assert not any(marks.dropped)
    assert sum(d == [skip] for d in marks.derived) == 1
    assert sum(p == {skip: "capped"} for p in marks.passed_over) == 4  # the other b1 layers
    assert all(d != [skip] for d in marks.derived[:7])  # b0 layers have no skip
