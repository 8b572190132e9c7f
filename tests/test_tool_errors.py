"""``python -m nas.report``, ``nas.cost.latency`` and ``nas.experiment``: bad arguments and unwritable outputs are one line."""
from pathlib import Path

import pytest

import search_spaces  # noqa: F401
from nas.experiment import experiment
from nas.cost import latency
from nas.report import report
from nas.cli.build import build_searcher
from nas.cli.run_command import open_run_dir
from nas.config import build_config

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.dataset=synthetic", "data.synthetic_size=32", "data.image_size=8", "data.batch_size=16",
        "model.C=4", "model.N=1", "search.epochs=1", "search.report=false"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A finished one-epoch search and a plain file (a path under it cannot be created)."""
    tmp = tmp_path_factory.mktemp("tools")
    cfg = build_config({}, TINY)
    run = tmp / "run"
    open_run_dir(run, cfg, resume=False)
    build_searcher(cfg, run, log=lambda *_: None).run()
    blocker = tmp / "a_file"
    blocker.write_text("not a folder\n")
    return {"run": run, "file": blocker, "tmp": tmp}


def _cases(d):
    run, under_file, tmp = d["run"], d["file"] / "sub", d["tmp"]
    lat = ["--space", "nb201", "--N", "1", "--input-size", "8", "--batch", "2", "--repeats", "1", "--warmup", "0"]
    exp = ["--search-config", str(REPO / "configs" / "quickstart.yaml"),
           "--final-config", str(REPO / "configs" / "experiment_final_clutter.yaml")]
    return {
        "report: no run dir": (report.main, [str(tmp / "nope")], [str(tmp / "nope")]),
        "report: --out under a file": (report.main, [str(run), "--out", str(under_file)], [str(under_file)]),
        "report: --out is a file": (report.main, [str(run), "--out", str(d["file"])], [str(d["file"])]),
        "latency: huge C": (latency.main, [*lat, "--C", "1000000", "--out", str(tmp / "l.json")], ["--C", "1,024"]),
        "latency: bad device": (latency.main, [*lat, "--C", "4", "--device", "tpu" * 100, "--out", str(tmp / "l.json")],
                                ["--device"]),
        "latency: missing folder": (latency.main, [*lat, "--C", "4", "--out", str(tmp / "no" / "l.json")],
                                    [str(tmp / "no")]),
        "latency: --out under a file": (latency.main, [*lat, "--C", "4", "--out", str(under_file / "l.json")],
                                        [str(under_file)]),
        "latency: --out is a folder": (latency.main, [*lat, "--C", "4", "--out", str(tmp)], ["cannot write"]),
        "experiment: zero seeds": (experiment.main, [*exp, "--seeds", "0", "--out", str(tmp / "e")], ["--seeds"]),
        "experiment: huge random": (experiment.main, [*exp, "--random", "10000000", "--out", str(tmp / "e")],
                                    ["--random"]),
        "experiment: --out under a file": (experiment.main, [*exp, "--out", str(under_file)], ["cannot write"]),
    }


CASES = sorted(_cases({"run": Path("r"), "file": Path("f"), "tmp": Path("t")}))


@pytest.mark.parametrize("case", CASES)
def test_tool_errors_are_one_line_exit_2(dirs, case, capsys):
    entry, argv, expected = _cases(dirs)[case]
    assert entry(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("error: ") and err.count("\n") == 1 and len(err) < 400, err
    for text in expected:
        assert text in err, (text, err)
