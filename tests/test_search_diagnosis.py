"""benchmarks/search_diagnosis.py on a tiny search: the SNR windows and the supernet's ranking of retrained cells."""
import json
from pathlib import Path

import pytest
from benchmark_helpers import load_benchmark, run_main

TINY = ["data.dataset=synthetic", "data.synthetic_size=64", "data.image_size=8", "data.batch_size=16",
        "model.C=4", "model.N=1", "search.epochs=2", "seed=3", "search.shrink_every=0"]
# Three retrained cells: two without the zero op, one with it.
CELLS = {
    "nonone-0": ("|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_3x3~0|skip_connect~1|nor_conv_3x3~2|",
                 [80.0, 82.0], [85.0, 86.0]),
    "nonone-1": ("|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|skip_connect~0|avg_pool_3x3~1|avg_pool_3x3~2|",
                 [70.0, 74.0], [75.0, 76.0]),
    "random-0": ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", [10.0, 10.0], [9.0, 9.0]),
}


@pytest.fixture(scope="module")
def diagnosis():
    return load_benchmark("search_diagnosis")


def write_retrained(root: Path) -> None:
    """A random-cell directory as ``nas.experiment`` writes it: genotype.yaml and retrain-seed<r>/final.json."""
    for name, (arch, vals, tests) in CELLS.items():
        (root / name).mkdir(parents=True)
        (root / name / "genotype.yaml").write_text(f"space: nb201\ngenotype: '{arch}'\n")
        for r, (v, t) in enumerate(zip(vals, tests)):
            (root / name / f"retrain-seed{r}").mkdir()
            (root / name / f"retrain-seed{r}" / "final.json").write_text(json.dumps({"val_acc": v, "test_acc": t}))


def test_ranking_counts_cells_without_the_zero_op_and_agrees_with_a_direct_count(diagnosis, tmp_path):
    write_retrained(tmp_path / "random")
    assert run_main(diagnosis, ["--no-shuffled", "--out", str(tmp_path / "d.json"),
                                "--retrained", str(tmp_path / "random"), *TINY]) == 0
    run = json.loads((tmp_path / "d.json").read_text())["runs"]["real"]
    assert run["steps"] == 2 * run["window"]  # one arch step per weight step, one window per epoch
    assert len(run["snr"]["cell"]["per_window_median_over_edges"]) == 2
    ranking = run["ranking"]
    rows = {r["cell"]: r for r in ranking["cells"]}
    assert set(rows) == set(CELLS)
    assert [rows[c]["zero_free"] for c in sorted(CELLS)] == [True, True, False]
    assert rows["nonone-0"]["retrained_val_acc"] == pytest.approx(81.0)
    assert rows["nonone-1"]["retrained_test_acc"] == pytest.approx(75.5)
    assert ranking["zero_free_cells"] == 2
    # two cells: tau-b is the sign of (supernet difference) x (retrained difference), 0 on a tie
    a, b = rows["nonone-0"]["supernet_val_acc"], rows["nonone-1"]["supernet_val_acc"]
    assert a != b  # (this seed's supernet separates them; a tie would leave tau-b undefined)
    expected = 1.0 if a > b else -1.0  # nonone-0 is the better one retrained, on val and on test
    assert ranking["zero_free_kendall_tau_b"] == pytest.approx(expected)
    assert ranking["zero_free_kendall_tau_b_test"] == pytest.approx(expected)


def test_a_search_without_arch_steps_gets_the_ranking_and_a_cell_found_twice_counts_once(diagnosis, tmp_path):
    import shutil

    write_retrained(tmp_path / "cells")
    shutil.copytree(tmp_path / "cells" / "nonone-0", tmp_path / "cells" / "searched-nonone-0")  # the same cell again
    # search.warmup_epochs = search.epochs: weight steps only, uniform sampling
    assert run_main(diagnosis, ["--no-shuffled", "--out", str(tmp_path / "d.json"), "--retrained",
                                str(tmp_path / "cells"), *TINY, "search.warmup_epochs=2"]) == 0
    run = json.loads((tmp_path / "d.json").read_text())["runs"]["real"]
    assert run["steps"] == 0 and run["snr"] == {}
    assert sorted(r["cell"] for r in run["ranking"]["cells"]) == sorted(CELLS)


def test_a_bad_retrained_directory_is_one_line_before_any_search(diagnosis, tmp_path, capsys):
    assert run_main(diagnosis, ["--out", str(tmp_path / "d.json"), "--retrained", str(tmp_path / "missing"),
                                *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "is not a directory" in err and "\n" not in err
    assert not (tmp_path / "d.json").exists()
