"""Mixed precision (search.amp) must not change the architecture gradient: the arch step runs in float32.

CUDA is where ``search.amp`` applies; the tests force the searcher's flag on the
CPU, where autocast runs the same ops in bfloat16.
"""
import pytest
import torch

import search_spaces  # noqa: F401  (registers the spaces)
from nas.cli.build import build_searcher
from nas.config import build_config

TINY = ["data.dataset=synthetic", "data.synthetic_size=64", "data.image_size=8", "data.batch_size=16",
        "model.C=8", "model.N=1", "search.epochs=1", "search.arch_lr=0", "search.arch_weight_decay=0", "seed=0"]


def quiet(*_):
    pass


def _sample(searcher, seed):
    searcher.supernet.architecture.seed(seed)  # the same Gumbel noise for each call
    return searcher.supernet.architecture.sample("gdas", 1.0)


def _arch_grads(searcher, x, y, seed, amp):
    searcher.amp = amp
    searcher.arch_step(x, y, _sample(searcher, seed))  # arch_lr=0: the logits stay where they are
    return torch.cat([p.grad.flatten() for p in searcher.arch_params])


@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_amp_leaves_the_arch_gradient_at_float32(space):
    searcher = build_searcher(build_config({}, TINY + [f"model.space={space}"]), log=quiet)
    x, y = next(iter(searcher.data.val.epoch(0)))
    for seed in range(3):
        exact = _arch_grads(searcher, x, y, seed, amp=False)
        mixed = _arch_grads(searcher, x, y, seed, amp=True)
        assert exact.norm() > 0
        assert ((mixed - exact).norm() / exact.norm()).item() < 0.02


def test_amp_still_runs_the_weight_step_in_bfloat16():
    searcher = build_searcher(build_config({}, TINY), log=quiet)
    searcher.amp = True
    x, y = next(iter(searcher.data.train.epoch(0)))
    dtypes = []
    conv = next(m for m in searcher.supernet.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    searcher.weight_step(x, y, _sample(searcher, 0))
    searcher.arch_step(x, y, _sample(searcher, 0))
    assert dtypes == [torch.bfloat16, torch.float32]
