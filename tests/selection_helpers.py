"""Shared by the selection tests (op marginals, local search): a tiny search config and a train_search.py run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.dataset=synthetic", "data.synthetic_size=64", "data.image_size=8", "data.batch_size=16",
        "model.C=4", "model.N=1", "search.epochs=2", "search.arch_lr=0.05", "seed=3", "deterministic=true",
        "search.eval_every=0", "search.report=false", "model.exclude_zero=true", "search.sample_excluded=false"]


def quiet(*_):
    pass


def run_train_search(out: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Runs ``train_search.py`` on ``TINY`` plus ``overrides`` into ``out`` (asserting it succeeds); returns
    the process and the last line of its ``metrics.jsonl``."""
    proc = subprocess.run([sys.executable, str(ROOT / "train_search.py"), "--out", str(out), *TINY, *overrides],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])


def finished_search(tmp_path_factory, name: str, overrides: list[str]):
    """A tiny search on ``TINY`` plus ``overrides`` run to its end in a fresh run directory: (searcher, dir)."""
    from nas.cli.build import build_searcher
    from nas.config import build_config

    out = tmp_path_factory.mktemp(name)
    searcher = build_searcher(build_config({}, TINY + overrides), out, log=quiet)
    searcher.run()
    return searcher, out
