"""Shared by the resume tests: stop a search after a given weight step, then resume it."""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from nas.cli.build import build_searcher


def interrupt_then_resume(cfg, run_dir: Path, cut: int, log=lambda *_: None):
    """Runs a search in ``run_dir`` until its ``cut``-th weight step asks for a stop (as SIGTERM
    would), checks that it stopped with ``RunInterrupted``, and returns a new searcher resumed
    from the checkpoint it wrote (not yet run)."""
    first = build_searcher(cfg, run_dir, log=log)
    calls, original = {"n": 0}, first.weight_step

    def counting(*a, **k):
        calls["n"] += 1
        if calls["n"] == cut:
            first.request_stop(signal.SIGTERM)
        return original(*a, **k)

    first.weight_step = counting
    with pytest.raises(Exception) as info:
        first.run()
    assert type(info.value).__name__ == "RunInterrupted"
    second = build_searcher(cfg, run_dir, log=log)
    second.resume(run_dir / "checkpoint.pt")
    return second
