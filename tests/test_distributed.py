"""Multi-process search with torchrun on CPU (gloo): same samples, averaged gradients, one set of files."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TINY = ["data.dataset=synthetic", "data.synthetic_size=128", "data.image_size=8", "data.batch_size=32",
        "model.C=4", "model.N=1", "search.epochs=2", "search.arch_lr=0.01", "seed=7"]


def torchrun(*args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["gdas", "snas"])
def test_two_ranks_end_with_identical_logits_and_weights(tmp_path, mode):
    proc = torchrun("tests/ddp_worker.py", str(tmp_path), *TINY, f"model.mode={mode}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert (r0["rank"], r1["rank"], r0["world_size"]) == (0, 1, 2)
    for k in r0["model"]:
        assert torch.equal(r0["model"][k], r1["model"][k]), k
    final_logits = r0["model"]["architecture.logits.cell"]
    assert final_logits.abs().max() > 1e-2  # they did train (they start at about 1e-3)
    assert [m["genotype"] for m in r0["history"]] == [m["genotype"] for m in r1["history"]]
    assert r0["history"][-1]["train_loss"] == pytest.approx(r1["history"][-1]["train_loss"])  # reduced metrics
    # The data was sharded: each rank saw a different half of the global batch.
    assert r0["train_batch"].numel() == r1["train_batch"].numel() == 16
    assert not torch.equal(r0["train_batch"], r1["train_batch"])


@pytest.mark.slow
def test_torchrun_cli_writes_one_set_of_files(tmp_path):
    out = tmp_path / "run"
    proc = torchrun("train_search.py", "--out", str(out), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [".lock", "checkpoint.pt", "config.yaml", "genotype.yaml",
                                                     "metrics.jsonl", "report"]  # .lock: rank 0's run lock
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert proc.stdout.count("derived genotype:") == 1  # only rank 0 prints
    assert list(tmp_path.iterdir()) == [out]


@pytest.mark.slow
def test_torchrun_train_final_writes_one_final_json(tmp_path):
    from nas.spaces.genotype import genotype_record, save_genotype
    import search_spaces
    space = search_spaces.get("nb201")
    gfile = tmp_path / "g.yaml"
    save_genotype(gfile, genotype_record(space, space.random_genotype(torch.Generator().manual_seed(0))))
    out = tmp_path / "final"
    proc = torchrun("train_final.py", "--genotype", str(gfile), "--out", str(out), *TINY[:5], "train.epochs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "final.json").is_file() and proc.stdout.count("test accuracy") == 1
