"""benchmarks/cell_judges.py: the reading of retrained cells, the judges' report, and the script end to end
on a tiny config (the proxies themselves: tests/test_zero_cost.py)."""
import json
from pathlib import Path

import pytest
from benchmark_helpers import load_benchmark, run_main

GOOD = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_3x3~0|skip_connect~1|nor_conv_3x3~2|"
POOLS = "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|skip_connect~0|avg_pool_3x3~1|avg_pool_3x3~2|"
ZERO = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
TINY_FINAL = """seed: 0
data: {dataset: synthetic, synthetic_size: 64, image_size: 8, batch_size: 16}
model: {space: nb201, C: 4, N: 1}
train: {epochs: 1, val_split: 0.25}
"""


@pytest.fixture(scope="module")
def judges():
    return load_benchmark("cell_judges")


def write_cell(root: Path, name: str, arch: str, runs: dict[int, tuple[float, float]]) -> None:
    """A cell directory as ``nas.experiment`` writes it: genotype.yaml and retrain-seed<r>/final.json."""
    (root / name).mkdir(parents=True)
    (root / name / "genotype.yaml").write_text(f"space: nb201\ngenotype: '{arch}'\n")
    for seed, (val, test) in runs.items():
        (root / name / f"retrain-seed{seed}").mkdir()
        (root / name / f"retrain-seed{seed}" / "final.json").write_text(json.dumps({"val_acc": val, "test_acc": test}))


def test_retrained_cells_are_read_once_each_seed_once(judges, tmp_path):
    write_cell(tmp_path / "a", "nonone-0", GOOD, {0: (80.0, 85.0), 1: (82.0, 87.0)})
    write_cell(tmp_path / "b", "search-seed4", GOOD, {1: (82.0, 87.0), 2: (84.0, 89.0)})  # seed 1 again
    write_cell(tmp_path / "a", "random-0", ZERO, {0: (10.0, 9.0)})
    write_cell(tmp_path / "a", "unfinished", POOLS, {})
    rows = {r["cell"]: r for r in judges.read_retrained([tmp_path / "a", tmp_path / "b"])}
    assert set(rows) == {GOOD, ZERO}
    assert rows[GOOD]["retrains"] == 3 and rows[GOOD]["val_acc"] == pytest.approx(82.0)
    assert rows[GOOD]["test_acc"] == pytest.approx(87.0)
    assert rows[GOOD]["zero_free"] and not rows[ZERO]["zero_free"]


def test_report_ranks_the_zero_free_cells_and_averages_the_top_quarter(judges):
    rows = [{"cell": str(k), "zero_free": k < 8, "val_acc": 80.0 + k, "test_acc": 90.0 - k,
             "judge": float(k if k < 8 else -k)} for k in range(9)]
    r = judges.judge_report(rows, "judge")
    assert r["zero_free_cells"] == 8 and r["cells"] == 9
    assert r["tau_val_zero_free"] == pytest.approx(1.0) and r["tau_test_zero_free"] == pytest.approx(-1.0)
    assert r["top_quarter_val"] == pytest.approx((87 + 86) / 2)  # the judge's two highest of eight
    assert r["top_cell"] == "7"
    assert r["tau_val_all"] < 1.0  # the cell with the zero op is ranked last by the judge, first by val


def test_script_end_to_end_with_a_short_training(judges, tmp_path, capsys):
    write_cell(tmp_path / "cells", "nonone-0", GOOD, {0: (80.0, 85.0)})
    write_cell(tmp_path / "cells", "nonone-1", POOLS, {0: (70.0, 75.0)})
    write_cell(tmp_path / "cells", "random-0", ZERO, {0: (10.0, 9.0)})
    (tmp_path / "final.yaml").write_text(TINY_FINAL)
    assert run_main(judges, ["--retrained", str(tmp_path / "cells"), "--config", str(tmp_path / "final.yaml"),
                            "--init-seeds", "2", "--short-epochs", "1", "--out", str(tmp_path / "j.json")]) == 0
    result = json.loads((tmp_path / "j.json").read_text())
    assert [j["judge"] for j in result["judges"]] == ["params", "synflow", "naswot", "grad_norm", "snip", "short-1"]
    cells = {c["cell"]: c for c in result["cells"]}
    assert cells[GOOD]["params"] > cells[POOLS]["params"]  # three 3x3 convolutions against none
    assert 0.0 <= cells[GOOD]["short-1"] <= 100.0
    assert "| short-1 |" in capsys.readouterr().out


def test_supernet_judges_each_search_and_their_mean(judges, tmp_path):
    write_cell(tmp_path / "cells", "nonone-0", GOOD, {0: (80.0, 85.0)})
    write_cell(tmp_path / "cells", "nonone-1", POOLS, {0: (70.0, 75.0)})
    write_cell(tmp_path / "cells", "random-0", ZERO, {0: (10.0, 9.0)})
    scores = {"search-seed0": {"nonone-0": 60.0, "nonone-1": 50.0, "random-0": 10.0},
              "search-seed1": {"nonone-0": 40.0, "nonone-1": 55.0}}  # this one did not score random-0
    archs = {"nonone-0": GOOD, "nonone-1": POOLS, "random-0": ZERO}
    for search, accs in scores.items():
        (tmp_path / "exp" / search).mkdir(parents=True)
        (tmp_path / "exp" / search / "supernet_scores.json").write_text(json.dumps(
            {cell: {"genotype": archs[cell], "val_acc": acc} for cell, acc in accs.items()}))
    rows = judges.read_retrained([tmp_path / "cells"])
    names = judges.supernet_scores(rows, [tmp_path / "exp"])
    assert names == ["supernet:exp/search-seed0", "supernet:exp/search-seed1", "supernet-mean"]
    by_cell = {r["cell"]: r for r in rows}
    assert by_cell[GOOD]["supernet-mean"] == pytest.approx(50.0)
    assert by_cell[POOLS]["supernet-mean"] == pytest.approx(52.5)
    assert "supernet-mean" not in by_cell[ZERO]  # one search did not score it: no mean of other searches
    first, second = judges.judge_report(rows, names[0]), judges.judge_report(rows, names[1])
    assert first["tau_val_zero_free"] == pytest.approx(1.0) and first["cells"] == 3
    assert second["tau_val_zero_free"] == pytest.approx(-1.0) and second["cells"] == 2  # only what it scored
    with pytest.raises(judges.UserError, match="no search-seed"):
        judges.supernet_scores(rows, [tmp_path / "cells"])


def test_enumerate_scores_every_cell_over_the_ops_and_the_biggest_has_most_parameters(judges, tmp_path, capsys):
    (tmp_path / "final.yaml").write_text(TINY_FINAL)
    assert run_main(judges, ["--enumerate", "--enumerate-ops", "skip_connect,nor_conv_3x3", "--proxies",
                            "params,synflow", "--config", str(tmp_path / "final.yaml"),
                            "--out", str(tmp_path / "space.json")]) == 0
    cells = json.loads((tmp_path / "space.json").read_text())["cells"]
    assert len(cells) == 2 ** 6 and len({c["cell"] for c in cells}) == 64
    assert all(c["zero_free"] and set(c) == {"cell", "zero_free", "params", "synflow"} for c in cells)
    biggest = max(cells, key=lambda c: c["params"])
    assert biggest["cell"] == GOOD.replace("skip_connect", "nor_conv_3x3")  # six convolutions
    assert min(cells, key=lambda c: c["params"])["cell"].count("skip_connect") == 6
    out = capsys.readouterr().out
    assert "params: highest 5" in out and biggest["cell"] in out


@pytest.mark.parametrize("argv, message", [
    (["--retrained", "/nonexistent/cells"], "is not a directory"),
    (["--retrained", "{empty}"], "need at least 2"),
    (["--retrained", "{cells}", "--init-seeds", "0"], "--init-seeds"),
    (["--retrained", "{cells}", "--config", "{darts}"], "pass the config they were retrained with"),
    (["--retrained", "{cells}", "--enumerate"], "one of the two"),
    ([], "one of the two"),
    (["--enumerate", "--config", "{darts}"], "lists NB201 cells only"),
    (["--enumerate", "--enumerate-ops", "conv_9x9"], "not an NB201 op"),
    (["--retrained", "{cells}", "--proxies", "synflow,magic"], "--proxies takes a comma-separated list"),
    (["--retrained", "{cells}", "{broken}"], "is not a readable final.json"),
])
def test_bad_input_is_one_line_and_exit_2(judges, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    write_cell(tmp_path / "cells", "nonone-0", GOOD, {0: (80.0, 85.0)})
    write_cell(tmp_path / "cells", "nonone-1", POOLS, {0: (70.0, 75.0)})
    (tmp_path / "darts.yaml").write_text("model: {space: darts}\n")
    write_cell(tmp_path / "broken", "nonone-0", GOOD, {0: (80.0, 85.0)})
    (tmp_path / "broken" / "nonone-0" / "retrain-seed0" / "final.json").write_text("{truncated")
    argv = [a.format(empty=tmp_path / "empty", cells=tmp_path / "cells", darts=tmp_path / "darts.yaml",
                     broken=tmp_path / "broken") for a in argv]
    assert run_main(judges, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
