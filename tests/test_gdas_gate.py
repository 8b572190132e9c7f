"""A GDAS arch step's logit gradient against the official GDAS formulas, per space and rule.

The reference builds everything literally as GDAS's code writes it, in float64
with plain autograd: the hard straight-through sample ``h`` (``one_h - probs.detach()
+ probs`` of ``(log_softmax(logits) + gumbel) / tau``) and each edge as
``h[i] * op_i(x) + sum_{j != i} h[j]`` (NB201 ``SearchCell.forward_gdas``, rule
``all_ops``) or ``h[i] * op_i(x)`` (DARTS-space ``MixedOp.forward_gdas``, rule
``sampled_op``).
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import nas.layers.ops
import search_spaces
from nas import ChoiceLayer
from nas.sampling.architecture import ArchSample
from nas.cli.build import build_searcher
from nas.config import build_config
from nas.utils.errors import UserError
from nas.layers.gates import ALL_OPS, SAMPLED_OP

TINY = ["data.dataset=synthetic", "data.synthetic_size=32", "data.image_size=8", "data.batch_size=8",
        "model.C=4", "model.N=1", "search.epochs=1", "search.arch_weight_decay=0", "seed=3"]
DEFAULTS = {"nb201": ALL_OPS, "darts": SAMPLED_OP, "mobilenet": SAMPLED_OP}
TAU = 2.0


def quiet(*_):
    pass


def official_sample(architecture, seed: int) -> ArchSample:
    """GDAS's hard straight-through sample of every group (its ``forward`` in search_model_gdas.py)."""
    generator = torch.Generator().manual_seed(seed)
    weights, indices = {}, {}
    for group, logits in architecture.masked_logits().items():
        gumbels = -torch.empty(logits.shape, dtype=logits.dtype).exponential_(generator=generator).log()
        probs = torch.softmax((logits.log_softmax(dim=1) + gumbels) / TAU, dim=1)
        index = probs.max(-1, keepdim=True)[1]
        one_h = torch.zeros_like(probs).scatter_(-1, index, 1.0)
        weights[group] = one_h - probs.detach() + probs
        indices[group] = index[:, 0].tolist()
    return ArchSample(weights, indices)


def official_forward(rule: str):
    """A ``ChoiceLayer.forward`` that mixes a hard sample exactly as the official code writes it."""
    def forward(self, x, weights, index=None):
        out = weights[index] * self.ops[index](x)
        if rule == ALL_OPS:
            out = out + sum(weights[j] for j in range(len(self.ops)) if j != index)
        return out
    return forward


def official_logit_grads(supernet, x, y, seed, rule, monkeypatch):
    """d CE / d logits under the official formula (float64, plain autograd: no fused gate, no fused ReLU-conv)."""
    sample = official_sample(supernet.architecture, seed)
    with monkeypatch.context() as m:
        m.setattr(ChoiceLayer, "forward", official_forward(rule))
        m.setattr(nas.layers.ops, "run_sequential", nn.Sequential.forward)
        loss = F.cross_entropy(supernet.forward_sample(x, sample), y)
    return torch.autograd.grad(loss, supernet.arch_parameters())


def arch_step_logit_grads(searcher, x, y, seed):
    """The logit gradient of the searcher's own arch step under the same sample."""
    sample = official_sample(searcher.supernet.architecture, seed)
    searcher.arch_step(x, y, sample)
    return [p.grad.clone() for p in searcher.arch_params]


def _flat(grads):
    return torch.cat([t.flatten() for t in grads])


def relative_l2(a, b):
    """``|a - b| / |b|`` over all groups."""
    return ((_flat(a) - _flat(b)).norm() / _flat(b).norm()).item()


def _searcher(space, rule):
    searcher = build_searcher(build_config({}, TINY + [f"model.space={space}", f"model.gdas_gate={rule}"]),
                              log=quiet)
    searcher.supernet.double()
    x, y = next(iter(searcher.data.val.epoch(0)))
    return searcher, x.double(), y


@pytest.mark.parametrize("space,rule", [("nb201", ""), ("nb201", ALL_OPS), ("nb201", SAMPLED_OP),
                                        ("darts", ""), ("darts", ALL_OPS), ("darts", SAMPLED_OP),
                                        ("mobilenet", "")])
def test_arch_step_logit_gradient_is_the_official_formula(space, rule, monkeypatch):
    searcher, x, y = _searcher(space, rule)
    expected = rule or DEFAULTS[space]
    assert all(layer.gdas_gate == expected for layer in searcher.choice_layers)
    informative = 0
    for seed in range(4):  # several samples; each arch step also moves the logits (BNs keep no running stats)
        ref = official_logit_grads(searcher.supernet, x, y, seed, expected, monkeypatch)
        got = arch_step_logit_grads(searcher, x, y, seed)
        # The loop's float32 cross-entropy is the only rounding. A sample whose cells output a constant
        # (e.g. `none` into node 3) leaves the loss independent of the logits after the next batch-stat BN:
        # its gradient is rounding noise (~1e-16), checked absolutely.
        informative += bool(_flat(ref).norm() > 1e-8)
        assert (_flat(got) - _flat(ref)).norm() <= 1e-5 * _flat(ref).norm() + 1e-12
    assert informative >= 2


def test_the_two_rules_differ_on_a_darts_supernet(monkeypatch):
    searcher, x, y = _searcher("darts", "")
    for seed in range(3):
        sampled = official_logit_grads(searcher.supernet, x, y, seed, SAMPLED_OP, monkeypatch)
        all_ops = official_logit_grads(searcher.supernet, x, y, seed, ALL_OPS, monkeypatch)
        assert relative_l2(all_ops, sampled) > 0.05  # the choice of rule is not a rounding detail


def test_each_space_declares_its_default_rule():
    assert {name: search_spaces.get(name).gdas_gate for name in DEFAULTS} == DEFAULTS


def test_unknown_rule_is_a_one_line_config_error():
    with pytest.raises(UserError, match="model.gdas_gate.*all_ops, sampled_op"):
        build_config({}, ["model.gdas_gate=official"])



def test_on_one_edge_the_rules_differ_by_a_scale_of_the_sampled_signal():
    # Softmax's Jacobian maps a constant vector to 0, so g.sum() on every weight changes nothing but the
    # sampled op's signal: all_ops's logit gradient is sampled_op's times (c - s) / c, c = <g, op_i(x)>,
    # s = g.sum() (docs/gradient_rules.md).
    torch.manual_seed(0)
    op = search_spaces.nb201.OPS["nor_conv_3x3"](4, 4, 1, False, False).double()
    layer = ChoiceLayer({"a": nn.Identity(), "b": nn.Identity(), "c": nn.Identity(), "conv": op})
    x, g = torch.randn(2, 4, 5, 5, dtype=torch.double), torch.randn(2, 4, 5, 5, dtype=torch.double)
    logits = torch.randn(4, dtype=torch.double, requires_grad=True)
    grads = {}
    for rule in (ALL_OPS, SAMPLED_OP):
        probs = torch.softmax(logits / TAU, 0)
        h = torch.zeros_like(probs).index_fill(0, torch.tensor([3]), 1.0) - probs.detach() + probs
        grads[rule], = torch.autograd.grad(official_forward(rule)(layer, x, h, 3), logits, g)
    c, s = (g * op(x)).sum(), g.sum()
    assert grads[SAMPLED_OP].abs().sum() > 0
    torch.testing.assert_close(grads[ALL_OPS], grads[SAMPLED_OP] * (c - s) / c)
