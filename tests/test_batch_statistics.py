"""The search evaluates with batch statistics in every BN, whatever the supernet's BN layout."""
import torch
import torch.nn as nn

from nas.layers.batch_statistics import batch_statistics
from nas.cli.build import build_searcher
from nas.config import build_config

TINY = ["data.dataset=synthetic", "data.synthetic_size=96", "data.image_size=8", "data.batch_size=16",
        "model.C=4", "model.N=1", "search.epochs=1", "seed=3", "search.report=false"]


def quiet(*_):
    pass


def test_batch_statistics_normalises_by_the_batch_and_leaves_running_stats_alone():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(9.0)
    bn.eval()
    x = torch.randn(16, 3, 4, 4) * 2 + 1
    with batch_statistics(bn):
        y = bn(x)
    reference = nn.functional.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    torch.testing.assert_close(y, reference)
    assert not bn.training and bn.momentum == 0.1
    assert torch.equal(bn.running_mean, torch.full((3,), 5.0)) and torch.equal(bn.running_var, torch.full((3,), 9.0))
    assert bn.num_batches_tracked.item() == 0


def test_official_layout_evaluates_like_the_batch_statistics_layout():
    # Same weights (the batch_stats layout has no buffers to copy), same genotype: the running statistics the
    # official layout gathered over sampled architectures must not enter the reported val accuracy.
    official = build_searcher(build_config({}, TINY), log=quiet)
    official.run()
    flat = build_searcher(build_config({}, TINY + ["model.bn_layout=batch_stats"]), log=quiet)
    flat.supernet.load_state_dict(official.supernet.state_dict(), strict=False)
    before = {k: v.clone() for k, v in official.supernet.state_dict().items()}
    genotype = official.exported_genotype()
    loss_a, acc_a = official.evaluate(official.data.val_eval, genotype)
    loss_b, acc_b = flat.evaluate(flat.data.val_eval, genotype)
    assert abs(loss_a - loss_b) < 1e-5 and acc_a == acc_b
    after = official.supernet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats untouched
    stem_bn = official.supernet.stem[1]
    assert stem_bn.track_running_stats and stem_bn.num_batches_tracked.item() > 0
