"""Several architectures per arch step (search.arch_samples): the step is their mean, and it is less noisy.

Each of the M samples runs on the whole arch batch; the logit gradient must equal
the mean of M single-sample steps (computed here one by one), and across draws
on one fixed batch its variance (what the sampled ops add) must fall by about M.
Splitting the batch into M chunks with one sample each (one pass instead of M)
was measured here first and did not lower that variance (0.0015 -> 0.0023 for
M = 4, chunks of 6 images): a chunk's gradient varies with its architecture
more than the whole batch's does, which cancels the averaging.
"""
import pytest
import torch

import search_spaces  # noqa: F401  (registers the spaces)
from nas.cli.build import build_searcher
from nas.config import build_config
from nas.sampling import shrinking
from nas.utils.errors import UserError

TINY = ["data.dataset=synthetic", "data.synthetic_size=96", "data.image_size=8", "data.batch_size=24",
        "model.C=8", "model.N=1", "search.epochs=1", "search.arch_lr=0", "search.arch_weight_decay=0", "seed=0"]


def quiet(*_):
    pass


def _grad(searcher, x, y, samples):
    searcher.arch_step(x, y, samples)  # arch_lr=0: the logits stay where they are
    return torch.cat([p.grad.flatten() for p in searcher.arch_params]).clone()


def _draw(searcher, count, seed):
    searcher.supernet.architecture.seed(seed)
    samples, _ = searcher.supernet.architecture.sample_many("gdas", 1.0, count)
    return samples


@pytest.mark.parametrize("count", [2, 3])
def test_the_step_is_the_mean_of_one_sample_steps(count):
    searcher = build_searcher(build_config({}, TINY), log=quiet)
    x, y = next(iter(searcher.data.val.epoch(0)))
    together = _grad(searcher, x, y, _draw(searcher, count, seed=1))
    # The same draws again (a sample's graph is freed by its step), one step each.
    parts = [_grad(searcher, x, y, one) for one in _draw(searcher, count, seed=1)]
    assert together.norm() > 0
    torch.testing.assert_close(together, sum(parts) / count, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(parts[0], parts[1])  # the samples really were different architectures


def test_more_architectures_per_step_lower_the_variance_of_the_logit_gradient():
    searcher = build_searcher(build_config({}, TINY), log=quiet)
    x, y = next(iter(searcher.data.val.epoch(0)))
    # Without `none`: a node whose inputs all sample `none` feeds zeros to the next conv's
    # batch-statistics BN, whose gradient then scales by 1/sqrt(eps) (a spike of ~1e3 in one
    # draw of a few hundred, here and in the official supernet), which would swamp a variance.
    arch = searcher.supernet.architecture
    shrinking.enable(arch)
    traits = searcher.space.op_traits()
    arch.allowed_cell[:, [traits[name].zero for name in searcher.space.op_names]] = False

    def variance(m):
        grads = torch.stack([_grad(searcher, x, y, _draw(searcher, m, seed)) for seed in range(60)])
        return grads.var(0).sum().item()

    one, four = variance(1), variance(4)
    # On a fixed batch the draws are the only noise: the mean of 4 has a quarter of the variance
    # (each estimate from 60 draws is good to about 20%).
    assert 2.5 < one / four < 6.0, (one, four)


@pytest.mark.parametrize("overrides, message", [
    (["search.arch_samples=0"], r"'search.arch_samples' must be in \[1, 64\], got 0"),
    (["search.arch_samples=65"], r"'search.arch_samples' must be in \[1, 64\], got 65"),
    (["search.arch_samples=2", "model.mode=darts"], "only the bilevel gdas search does.*set search.arch_samples=1"),
    (["search.arch_samples=2", "search.bilevel=false"], "only the bilevel gdas search does"),
])
def test_bad_arch_samples_get_one_line(overrides, message):
    with pytest.raises(UserError, match=message):
        build_config({}, TINY + overrides)


def test_a_search_with_several_architectures_per_step_runs_and_learns_the_logits(tmp_path):
    cfg = build_config({}, TINY[:-3] + ["search.arch_samples=3", "search.epochs=2", "search.report=false",
                                        "search.progress=false"])
    searcher = build_searcher(cfg, log=quiet, out_dir=tmp_path)
    before = [p.detach().clone() for p in searcher.arch_params]
    searcher.run()
    assert any(not torch.equal(b, p) for b, p in zip(before, searcher.arch_params))
    assert (tmp_path / "genotype.yaml").exists()
