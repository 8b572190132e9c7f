"""Smoke test of benchmarks/step_time.py: a tiny budget, every row present, every number positive."""
import importlib.util
import json
import math

import pytest
from benchmark_helpers import load_benchmark, run_main

TINY = ["--device", "cpu", "--threads", "1", "--repeats", "2", "--warmup", "0", "--batch", "4",
        "--image-size", "8", "--C", "4", "--N", "1", "--quiet"]


@pytest.fixture(scope="module")
def step_time():
    return load_benchmark("step_time")


def _official_available() -> bool:
    return importlib.util.find_spec("xautodl") is not None


@pytest.fixture(scope="module")
def results(step_time, tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "step_time.json"
    out = run_main(step_time, TINY + ["--json", str(path)])
    return out, json.loads(path.read_text())


def test_json_has_every_row_with_positive_numbers(results):
    returned, written = results
    assert written["spaces"] == json.loads(json.dumps(returned["spaces"]))
    ours = {"gdas", "snas", "darts", "floor", "path"}
    expected = {"nb201": ours | ({"official"} if _official_available() else set()), "darts": ours}
    assert [s["space"] for s in written["spaces"]] == ["nb201", "darts"]
    for space in written["spaces"]:
        rows = {r["variant"]: r for r in space["rows"]}
        assert set(rows) == expected[space["space"]]
        for r in rows.values():
            assert r["repeats"] >= 1 and len(r["times_ms"]) == r["repeats"]
            for key in ("iteration_ms", "best_ms", "weight_step_ms", "arch_step_ms", "peak_mib", "persistent_mib"):
                assert r[key] > 0 and math.isfinite(r[key]), (space["space"], r["variant"], key)
        assert space["ratios"]["gdas / floor"]["time"] > 0 and space["ratios"]["gdas / floor"]["time_best"] > 0
        assert space["ratios"]["gdas / floor"]["memory"] > 0
        assert space["ratios"]["snas / gdas"]["time"] > 0
    if not _official_available():
        assert any("xautodl" in note for note in written["spaces"][0]["notes"])
    env = written["environment"]
    assert env["threads"] == 1 and env["device"] == "cpu" and env["torch"]


def test_markdown_table_has_a_row_per_variant(step_time, results):
    _, written = results
    table = step_time.markdown(written["spaces"])
    for space in written["spaces"]:
        assert f"### {space['space']}" in table
        for r in space["rows"]:
            assert f"| {r['variant']} |" in table
    assert "| gdas / floor |" in table


def test_the_pinned_sample_is_what_every_gdas_draw_picks(step_time):
    # The benchmark's fairness rests on this: after pinning, every draw repeats the first sample.
    import torch
    import search_spaces

    args = step_time.parse_args(TINY)
    for name in ("nb201", "darts"):
        space = search_spaces.get(name)
        supernet, sample = step_time.pinned_sample(space, args, torch.device("cpu"))
        for group, logits in supernet.architecture.logits.items():
            step_time._pin(logits, sample.indices[group])
        for tau in (0.1, 1.0, 10.0):
            drawn, _ = supernet.architecture.sample_many("gdas", tau, 20)
            assert all(d.indices == sample.indices for d in drawn)


def test_channels_last_rows_and_bad_arguments(step_time, capsys):
    out = run_main(step_time, TINY + ["--spaces", "nb201", "--modes", "gdas,floor", "--repeats", "1", "--channels-last",
                                 "--no-memory"])
    names = [r["variant"] for r in out["spaces"][0]["rows"]]
    assert names == ["gdas", "floor", "gdas+cl", "floor+cl"]
    assert out["spaces"][0]["ratios"]["gdas+cl / gdas"]["time"] > 0
    with pytest.raises(SystemExit):
        step_time.parse_args(["--modes", "gdas,nope"])
