"""NAS-Bench-201 lookup (nas/nb201_benchmark.py) through the real nats_bench API, on small benchmark files
written here in the benchmark's own format (nats_bench's ArchResults / ResultsCount state dicts, bz2 pickles)."""
from __future__ import annotations

import bz2
import itertools
import json
import pickle
import sys

import pytest
import yaml

nats_bench = pytest.importorskip("nats_bench")  # the `test` extra installs it; CI runs these
from nats_bench.api_utils import ArchResults, ResultsCount, pickle_save  # noqa: E402

import search_spaces  # noqa: E402,F401
from nas.cli.build import build_searcher  # noqa: E402
from nas.config import build_config  # noqa: E402
from nas.utils.errors import UserError  # noqa: E402
from nas.experiment.cell_jobs import run_search_job, write_random_genotypes  # noqa: E402
from nas.experiment.experiment import main as experiment_main  # noqa: E402
from nas.experiment.rank_stats import percentile_among  # noqa: E402
from nas.spaces.genotype import load_genotype  # noqa: E402
from search_spaces.nb201_benchmark import METRIC_NAME, NB201Benchmark  # noqa: E402

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# Every NB201 cell, as the benchmark's meta_archs list holds them (15,625 arch strings).
ALL_ARCHS = ["|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops) for ops in itertools.product(OPS, repeat=6)]
SEEDS = (777, 888)
# The sets each dataset's trials are evaluated on, as in NATS-Bench.
EVAL_SETS = {"cifar10-valid": ("x-valid", "ori-test"), "cifar10": ("ori-test",),
             "cifar100": ("x-valid", "x-test", "ori-test"), "ImageNet16-120": ("x-valid", "x-test", "ori-test")}
EPOCHS = 200


def accuracy(index: int, dataset: str, setname: str, seed: int, epoch: int) -> float:
    """A distinct made-up accuracy per cell, dataset, set, seed and epoch (seeds 777/888 differ by 2)."""
    base = {"cifar10-valid": 80.0, "cifar10": 90.0, "cifar100": 60.0, "ImageNet16-120": 30.0}[dataset]
    return base + {"x-valid": 0.25, "x-test": 0.5, "ori-test": 0.75}[setname] + (index % 7) + (seed == 888) * 2.0 \
        + epoch / 1000.0


def expected(index: int) -> dict:
    """The lookup's numbers by hand: the last epoch (199), averaged over the two seeds (+1)."""
    def acc(dataset, setname):
        return round(accuracy(index, dataset, setname, 777, EPOCHS - 1) + 1.0, 5)
    return {"index": index,
            "cifar10": {"test": acc("cifar10", "ori-test"), "valid": acc("cifar10-valid", "x-valid")},
            "cifar100": {"test": acc("cifar100", "x-test"), "valid": acc("cifar100", "x-valid")},
            "ImageNet16-120": {"test": acc("ImageNet16-120", "x-test"), "valid": acc("ImageNet16-120", "x-valid")}}


def arch_entry(index: int) -> dict:
    """{hp: ArchResults state dict} of one cell, built with nats_bench's own classes."""
    arch = ALL_ARCHS[index]
    results = ArchResults(index, arch)
    for dataset, sets in EVAL_SETS.items():
        for seed in SEEDS:
            trial = ResultsCount(dataset, None, {e: 50.0 for e in range(EPOCHS)}, {e: 1.0 for e in range(EPOCHS)},
                                 0.5, 80.0, {"arch_str": arch, "channel": 16, "num_cells": 5, "class_num": 10},
                                 seed, EPOCHS, [0.01])
            keys = [f"{s}@{e}" for s in sets for e in range(EPOCHS)]
            trial.update_eval({k: accuracy(index, dataset, k.split("@")[0], seed, int(k.split("@")[1]))
                               for k in keys}, {k: 0.5 for k in keys}, {k: 0.1 for k in keys})
            results.update(dataset, seed, trial)
    return {"200": results.state_dict()}


def write_full(path, indexes) -> None:
    """The whole benchmark in one pickle (nats_bench.create(file, 'tss', fast_mode=False))."""
    data = {"meta_archs": ALL_ARCHS, "arch2infos": {i: arch_entry(i) for i in indexes},
            "evaluated_indexes": sorted(indexes)}
    pickle_save(data, str(path))  # nats_bench's own writer: path + ".pbz2"


_written: dict[str, bytes] = {}  # compressed files by name: each is built once per test session


def _cached(name: str, make) -> bytes:
    if name not in _written:
        _written[name] = bz2.compress(pickle.dumps(make(), protocol=4))  # what nats_bench's pickle_save writes
    return _written[name]


def write_directory(path, indexes) -> None:
    """The NATS-tss-v1_0-3ffb9-simple layout: meta plus one pickle per cell (fast_mode=True)."""
    path.mkdir()
    (path / "meta.pickle.pbz2").write_bytes(_cached("meta", lambda: {"meta_archs": ALL_ARCHS}))
    for i in indexes:
        (path / f"{i:06d}.pickle.pbz2").write_bytes(_cached(str(i), lambda: arch_entry(i)))


INDEXES = (0, 1234, 15624)


@pytest.fixture(scope="module")
def full_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "NATS-tss-v1_0-3ffb9-small"
    write_full(path, INDEXES)
    return path.with_name(path.name + ".pbz2")


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "NATS-tss-v1_0-3ffb9-simple"
    write_directory(path, INDEXES)
    return path


@pytest.mark.parametrize("form", ["full_file", "directory"])
def test_lookup_reads_the_benchmark_numbers_through_nats_bench(form, request):
    bench = NB201Benchmark(request.getfixturevalue(form))
    assert bench.api.fast_mode == (form == "directory")
    for i in INDEXES:
        assert bench.lookup(ALL_ARCHS[i]) == expected(i)
    # by hand: base + set offset + 1234 % 7 + (mean of seed offsets 0 and 2) + epoch 199 / 1000
    assert expected(1234)["cifar10"] == {"test": pytest.approx(90.75 + 2 + 1 + 0.199),
                                         "valid": pytest.approx(80.25 + 2 + 1 + 0.199)}
    assert bench.lookup(ALL_ARCHS[5]) is None                       # in the space, no results in this file
    assert bench.lookup("|nor_conv_3x3~0|+|foo~0|none~1|") is None  # not a cell of the benchmark


def _one_line(path, match):
    with pytest.raises(UserError, match=match) as e:
        NB201Benchmark(path)
    assert "\n" not in str(e.value)


def test_missing_and_malformed_benchmarks_are_one_line(tmp_path, full_file):
    _one_line(tmp_path / "nope", "does not exist")
    (tmp_path / "empty").mkdir()
    _one_line(tmp_path / "empty", "has no meta.pickle.pbz2")
    (tmp_path / "junk.pbz2").write_bytes(b"not bz2 at all")
    _one_line(tmp_path / "junk.pbz2", "not a NATS-Bench topology benchmark file")
    with bz2.open(tmp_path / "list.pbz2", "wb") as f:
        pickle.dump([1, 2, 3], f)
    _one_line(tmp_path / "list.pbz2", r"lacks 'meta_archs', 'arch2infos', 'evaluated_indexes'")
    with bz2.open(tmp_path / "truncated.pbz2", "wb") as f:
        f.write(bz2.decompress(full_file.read_bytes())[:5000])
    _one_line(tmp_path / "truncated.pbz2", "not a NATS-Bench topology benchmark file")


def test_a_pickle_that_would_build_objects_is_refused_before_nats_bench_loads_it(tmp_path):
    # An ArchResults object itself (not its state dict): unpickling it would import and build a class.
    data = {"meta_archs": ALL_ARCHS[:3], "arch2infos": {}, "evaluated_indexes": [], "x": ArchResults(0, ALL_ARCHS[0])}
    pickle_save(data, str(tmp_path / "objects"))
    _one_line(tmp_path / "objects.pbz2", "nats_bench.api_utils.ArchResults object, not plain results")
    # In a directory the per-cell file is checked when the cell is first looked up.
    write_directory(tmp_path / "dir", ())
    pickle_save({"200": ArchResults(0, ALL_ARCHS[0])}, str(tmp_path / "dir" / "000000.pickle"))
    with pytest.raises(UserError, match="ArchResults object"):
        NB201Benchmark(tmp_path / "dir").lookup(ALL_ARCHS[0])


def test_a_cell_entry_without_hp_200_is_one_line(tmp_path):
    write_directory(tmp_path / "dir", ())
    entry = arch_entry(3)
    pickle_save({"12": entry["200"]}, str(tmp_path / "dir" / "000003.pickle"))
    with pytest.raises(UserError, match="lacks hp=200 results"):
        NB201Benchmark(tmp_path / "dir").lookup(ALL_ARCHS[3])


def test_without_nats_bench_the_error_says_what_to_install(monkeypatch, full_file):
    monkeypatch.setitem(sys.modules, "nats_bench", None)  # as if not installed: its import fails
    _one_line(full_file, r"needs the nats_bench package: pip install nats_bench")


def test_the_config_key_is_for_nb201_only():
    with pytest.raises(UserError, match="search.nb201_benchmark.*only space nb201"):
        build_config({}, ["model.space=darts", "search.nb201_benchmark=x"])


TINY = ["data.dataset=synthetic", "data.synthetic_size=48", "data.image_size=8", "data.batch_size=16",
        "model.C=4", "model.N=1", "search.epochs=2", "search.arch_lr=0.05", "seed=2", "deterministic=true"]


@pytest.mark.slow
def test_every_epoch_of_a_search_records_its_derived_cells_benchmark_numbers(tmp_path):
    plain = build_searcher(build_config({}, TINY), log=lambda s: None)
    plain.run()
    derived = [ALL_ARCHS.index(m["genotype"]) for m in plain.history]
    others = [i for i in (7, 4321) if i not in derived]
    path = tmp_path / "bench"
    write_directory(path, sorted(set(derived[:1] + others)))  # the last epoch's cell may be missing
    searcher = build_searcher(build_config({}, TINY + [f"search.nb201_benchmark={path}"]), tmp_path / "run",
                              log=lambda s: None)
    (tmp_path / "run").mkdir()
    searcher.run()
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["genotype"] for m in lines] == [ALL_ARCHS[i] for i in derived]  # the lookup changes nothing else
    assert lines[0]["benchmark"] == expected(derived[0])
    assert lines[1]["benchmark"] == (expected(derived[1]) if derived[1] == derived[0] else None)

    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from nas.report.report import load_run
    from nas.report.figures import benchmark_figure
    (ax,) = benchmark_figure(Figure, load_run(tmp_path / "run")).axes
    cifar10_test = next(l for l in ax.get_lines() if l.get_label() == "CIFAR-10 test")
    want = [m["benchmark"]["cifar10"]["test"] if m["benchmark"] else None for m in lines]
    got = [None if v != v else v for v in cifar10_test.get_ydata()]  # NaN: a gap where the file lacks the cell
    assert got == want


@pytest.mark.slow
def test_experiment_scores_cells_by_lookup_instead_of_retraining(tmp_path, capsys):
    search = tmp_path / "search.yaml"
    search.write_text(yaml.safe_dump({"device": "cpu", "data": {"dataset": "synthetic", "synthetic_size": 48,
                                                                "image_size": 8, "batch_size": 16},
                                      "model": {"space": "nb201", "C": 4, "N": 1},
                                      "search": {"epochs": 1, "progress": False, "report": False}}))
    out = tmp_path / "exp"
    from nas.config import load_config
    summary, _ = run_search_job(load_config(search, ["seed=0"]), out / "search-seed0")
    randoms = [load_genotype(p)[1] for p in write_random_genotypes("nb201", 2, tmp_path / "draw")]
    nonone = [load_genotype(p)[1] for p in write_random_genotypes("nb201", 2, tmp_path / "draw", none_free=True)]
    space = search_spaces.get("nb201")
    cells = [ALL_ARCHS.index(a) for a in [summary["genotype"], *map(space.format, randoms + nonone)]]
    write_directory(tmp_path / "bench", sorted(set(cells)))
    args = ["--search-config", str(search), "--benchmark", str(tmp_path / "bench"), "--seeds", "1",
            "--random", "2", "--out", str(out)]
    assert experiment_main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == f"{METRIC_NAME} (%)" and results["final_config"] is None
    assert results["retrain_seeds"] == 0 and results["benchmark"] == str(tmp_path / "bench")
    assert [c["group"] for c in results["cells"]] == ["searched", "random", "random", "nonone", "nonone"]
    # val = the benchmark's CIFAR-10-valid accuracy, test = its CIFAR-10 test accuracy, one lookup per cell
    assert [c["test_accs"] for c in results["cells"]] == [[expected(i)["cifar10"]["test"]] for i in cells]
    assert [c["val_accs"] for c in results["cells"]] == [[expected(i)["cifar10"]["valid"]] for i in cells]
    searched = results["cells"][0]
    assert searched["percentile"]["random"]["test"] == percentile_among(
        searched["test_mean"], [c["test_mean"] for c in results["cells"][1:3]])
    assert not list(out.rglob("retrain*"))  # nothing was trained
    markdown = (out / "results.md").read_text()
    assert "NB201 benchmark CIFAR-10 test accuracy (hp=200) (%):" in markdown and "nothing retrained" in markdown
    assert "Retraining noise" not in markdown
    # a cell the benchmark lacks is one line, exit 2
    assert set(cells[1:]) - {cells[0]}
    write_directory(tmp_path / "partial", [cells[0]])
    capsys.readouterr()
    assert experiment_main(args[:3] + [str(tmp_path / "partial")] + args[4:]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no results in the NAS-Bench-201 benchmark" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("options, message", [
    (["--final-config", "{final}", "--benchmark", "{bench}"],
     "--benchmark scores the cells by lookup and --final-config by retraining; use one"),
    (["--benchmark", "{bench}", "model.space=mobilenet"],
     "--benchmark looks cells up in NAS-Bench-201, but the search config searches 'mobilenet'"),
    (["--benchmark", "{tmp}/MISSING"], "MISSING"),
    ([], "--final-config is required unless --benchmark scores the cells by lookup"),
])
def test_experiment_benchmark_options_are_checked_before_any_work(tmp_path, capsys, options, message):
    search = tmp_path / "search.yaml"
    search.write_text(yaml.safe_dump({"device": "cpu", "data": {"dataset": "synthetic"}, "model": {"space": "nb201"}}))
    final = tmp_path / "final.yaml"
    final.write_text(yaml.safe_dump({"device": "cpu", "model": {"space": "nb201"}}))
    write_directory(tmp_path / "bench", [0])
    names = {"final": final, "bench": tmp_path / "bench", "tmp": tmp_path}
    args = ["--search-config", str(search), "--out", str(tmp_path / "exp"), *(o.format(**names) for o in options)]
    assert experiment_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "exp" / "search-seed0").exists()  # nothing ran
