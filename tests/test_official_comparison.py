"""benchmarks/official_comparison.py and official_differences.py: ours against the official GDAS code.

The official code (xautodl) is optional: the comparisons that run it are
skipped without it; the refusal without it is checked by hiding it.
"""
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import official_comparison as oc  # noqa: E402
from benchmarks.official import official_lr, official_tau  # noqa: E402

HAVE_XAUTODL = importlib.util.find_spec("xautodl") is not None
needs_xautodl = pytest.mark.skipif(not HAVE_XAUTODL, reason="xautodl (the official GDAS code) is not installed; "
                                                            "pip install --no-deps xautodl==1.0.0")
TINY_SEARCH = ["search.epochs=2", "model.C=4", "model.N=1"]
TINY_FINAL = """\
seed: 0
device: cpu
data: {dataset: digits_clutter, batch_size: 64, augment: true}
model: {space: nb201, C: 4, N: 1}
train: {epochs: 1, lr: 0.05, eval_every: 0}
"""


def test_official_schedules_match_ours():
    from nas.sampling.gumbel import tau_at
    from nas.config import SearchConfig
    from nas.engine.search import build_optimizers
    import search_spaces

    for epochs in (2, 7, 40):
        s = SearchConfig(epochs=epochs, lr=0.05, lr_min=0.001)
        opt, _, scheduler = build_optimizers(search_spaces.get("nb201").build_supernet(C=4, N=1), s)
        for epoch in range(epochs):
            scheduler.step(epoch)
            assert opt.param_groups[0]["lr"] == pytest.approx(official_lr(epoch, epochs, s.lr, s.lr_min), abs=1e-12)
            assert tau_at("linear", epoch, epochs, 10.0, 0.1) == pytest.approx(official_tau(epoch, epochs, 10.0, 0.1),
                                                                                abs=1e-12)


def test_statistics_are_over_search_seeds():
    cells = [{"test_acc": [80.0, 82.0], "test_acc_mean": 81.0}, {"test_acc": [84.0, 86.0], "test_acc_mean": 85.0},
             {"test_acc": [82.0, 84.0], "test_acc_mean": 83.0}]
    s = oc.summarize_implementation(cells)
    assert s["mean"] == pytest.approx(83.0)
    assert s["se"] == pytest.approx(2.0 / math.sqrt(3))           # sd of 81, 85, 83 is 2
    assert s["retrain_sd"] == pytest.approx(math.sqrt(2.0))       # each pair's variance is 2
    d = oc.difference(s, {"mean": 80.0, "se": 1.0})
    assert d["mean"] == pytest.approx(3.0)
    assert d["se"] == pytest.approx(math.sqrt(4.0 / 3 + 1.0))


def test_recording_loader_tells_batches_apart():
    from nas.data import build_search_data, make_synthetic

    images = make_synthetic(size=96, num_classes=3, image_size=8, seed=0)
    digests = []
    for seed in (0, 0, 1):
        data = oc.recorded(build_search_data(images, 0.5, 16, seed=seed))
        for _ in data.train.epoch(0):
            pass
        val = data.val.cycle(0)
        for _ in range(5):  # more than one pass over the val half
            next(val)
        digests.append((data.train.digests, data.val.digests))
        assert data.train.counts == {0: 3} and data.val.counts == {0: 5}
    assert digests[0] == digests[1]
    assert digests[0][0] != digests[2][0] and digests[0][1] != digests[2][1]


def test_refuses_in_one_line_without_xautodl(monkeypatch, tmp_path, capsys):
    # Hide xautodl whether or not it is installed: every import of it fails.
    for name in [n for n in sys.modules if n == "xautodl" or n.startswith("xautodl.")] + ["xautodl"]:
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "cmp"
    assert oc.main(["--out", str(out), "--seeds", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "xautodl" in err and "pip install" in err
    assert not out.exists()


def test_seed_arguments():
    args = oc.build_parser().parse_args(["--out", "x", "--seeds", "0,2"])
    assert args.seeds == [0, 2]
    assert oc.build_parser().parse_args(["--out", "x", "--seeds", "3"]).seeds == 3
    with pytest.raises(oc.UserError, match="--seeds"):
        oc.run_comparison("configs/quickstart.yaml", "configs/experiment_final_clutter.yaml", 0, 3, Path("unused"))


@needs_xautodl
def test_comparison_searches_same_batches_and_resumes(tmp_path):
    final = tmp_path / "final.yaml"
    final.write_text(TINY_FINAL)
    out = tmp_path / "cmp"
    lines = []
    torch.set_num_threads(1)
    results = oc.run_comparison("configs/quickstart.yaml", str(final), 1, 1, out, TINY_SEARCH, say=lines.append)
    assert results["same_batches"]
    ours = json.loads((out / "ours-seed0" / "search.json").read_text())
    official = json.loads((out / "official-seed0" / "search.json").read_text())
    # Both read every batch of both epochs, and the same ones.
    assert len(ours["train_batches"]) == 2 and ours["steps"] == official["steps"] and min(ours["steps"]) > 0
    assert ours["train_batches"] == official["train_batches"] and ours["val_batches"] == official["val_batches"]
    # The official side's genotypes parse in our format; ours excludes none (quickstart's exclude_zero).
    import search_spaces
    space = search_spaces.get("nb201")
    for text in (official["genotype"], official["official_genotype"]):
        assert space.format(space.parse(text)) == text
    assert "none" not in official["genotype"]
    assert [len(c["test_acc"]) for c in results["implementations"]["official"]] == [1]
    assert (out / "results.md").is_file() and "Both sides read the same batches: yes" in (out / "results.md").read_text()
    # Rerunning resumes: every job is skipped and the table is the same.
    again = oc.run_comparison("configs/quickstart.yaml", str(final), 1, 1, out, TINY_SEARCH, say=lines.append)
    assert len(lines) == 8 and all("skipped" in line for line in lines[4:])
    assert json.dumps(again["summary"]) == json.dumps(results["summary"])  # nan (one seed) included
    # The clip check reruns the official search clipping the weights only, against this one.
    from benchmarks.official_differences import check_clip
    from nas.config import load_config
    cfg = load_config("configs/quickstart.yaml", [*oc.DEFAULT_OVERRIDES, *TINY_SEARCH, *oc.FIXED_OVERRIDES, "seed=0"])
    clip = check_clip(cfg, out / "official-seed0" / "search.json", log=lambda m: None)
    assert clip["genotype_shipped"] == official["genotype"] and len(clip["clip_weights_only_run"]) == 2
    assert clip["same_genotype"] == (clip["genotype_weights_only"] == official["genotype"])
    with pytest.raises(oc.UserError, match="another config"):
        check_clip(load_config("configs/quickstart.yaml", [*oc.DEFAULT_OVERRIDES, *TINY_SEARCH, "seed=0"]),
                   out / "official-seed0" / "search.json", log=lambda m: None)


@needs_xautodl
def test_ours_and_official_gradients_agree_with_equal_weights():
    from benchmarks.official_differences import check_macro_bn, check_same_weights
    from nas.config import load_config

    cfg = load_config("configs/quickstart.yaml", [*oc.DEFAULT_OVERRIDES, *TINY_SEARCH, *oc.FIXED_OVERRIDES])
    r = check_same_weights(cfg)
    assert r["same_sample"]
    assert r["weight_step"]["loss_ours"] == pytest.approx(r["weight_step"]["loss_official"], rel=1e-6)
    assert r["weight_step"]["max_rel_weight_grad_difference"] < 1e-5
    assert r["arch_step"]["max_rel_logit_grad_difference"] < 1e-4
    assert r["arch_step"]["logit_grad_norm"] > 0
    bn = check_macro_bn(cfg)
    assert bn["train"]["max_rel_output_difference"] == 0.0 and bn["train"]["max_rel_grad_difference"] == 0.0
    assert bn["eval"]["max_rel_output_difference"] > 1e-3  # running statistics matter only in eval mode
