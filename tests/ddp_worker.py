"""Run by tests/test_distributed.py under torchrun: a tiny search whose final state each rank saves."""
import sys
from pathlib import Path

import torch

import search_spaces  # noqa: F401
from nas.cli.build import build_searcher
from nas.config import build_config


def main(out: str, *overrides: str) -> None:
    cfg = build_config({}, list(overrides))
    searcher = build_searcher(cfg, log=lambda *_: None)
    searcher.run()
    state = {"model": searcher.supernet.state_dict(), "history": searcher.history,
             "rank": searcher.dist.rank, "world_size": searcher.dist.world_size,
             "train_batch": next(searcher.data.train.epoch(0))[1]}
    torch.save(state, Path(out) / f"rank{searcher.dist.rank}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:])
