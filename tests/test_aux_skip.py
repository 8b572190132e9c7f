"""DARTS-'s auxiliary skip: a module per edge from the space, on every edge that can have one."""
import pytest
import torch
import torch.nn as nn

import nas.cli.build
import search_spaces
from nas import ChoiceLayer
from nas.cli.build import build_searcher
from nas.config import build_config
from nas.utils.errors import UserError
from nas.layers.ops import FactorizedReduce

TINY = ["data.dataset=synthetic", "data.synthetic_size=32", "data.image_size=8", "data.batch_size=8",
        "model.C=4", "model.N=1", "search.epochs=2", "seed=0"]


def quiet(*_):
    pass


def _calls(supernet, sample, x):
    """``(layer, input, weights, index, output)`` of every choice layer call in one forward pass."""
    calls, handles = [], []
    for layer in (m for m in supernet.modules() if isinstance(m, ChoiceLayer)):
        handles.append(layer.register_forward_hook(
            lambda layer, args, out: calls.append((layer, *args, out))))
    supernet.forward_sample(x, sample)
    for h in handles:
        h.remove()
    return calls


@pytest.mark.parametrize("mode", ["gdas", "darts"])
def test_every_darts_edge_adds_the_beta_scaled_skip_reduction_edges_included(mode):
    torch.manual_seed(0)
    supernet = search_spaces.get("darts").build_supernet(mode=mode, C=4, N=1, in_channels=3, aux_skip=True)
    layers = [m for m in supernet.modules() if isinstance(m, ChoiceLayer)]
    for layer in layers:
        layer.skip_beta = 0.4
    x = torch.randn(4, 3, 8, 8)
    calls = _calls(supernet, supernet.architecture.sample(mode, 1.0).detach(), x)
    assert len(calls) == len(layers) == 5 * 14
    strided = 0
    for layer, h, weights, index, out in calls:
        skip = layer.aux_skip(h)
        strided += isinstance(layer.aux_skip, FactorizedReduce)
        assert skip.shape == out.shape
        layer.skip_beta = 0.0
        plain = layer(h, weights, index)
        layer.skip_beta = 0.4
        torch.testing.assert_close(out, plain + 0.4 * skip)
    assert strided == 2 * 8  # each reduction cell's 8 edges from its inputs (states 0, 1)


def test_the_reduction_skip_weights_train_in_the_weight_step():
    searcher = build_searcher(build_config({}, TINY + ["model.space=darts", "search.aux_skip=true"]), log=quiet)
    reduces = [layer.aux_skip for layer in searcher.choice_layers if isinstance(layer.aux_skip, FactorizedReduce)]
    assert len(reduces) == 2 * 8
    for layer in searcher.choice_layers:
        layer.skip_beta = 1.0
    before = [[p.detach().clone() for p in fr.parameters()] for fr in reduces]
    x, y = next(iter(searcher.data.train.epoch(0)))
    searcher.weight_step(x, y)
    for fr, old in zip(reduces, before):
        params = list(fr.parameters())
        assert params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
        assert all(not torch.equal(p, q) for p, q in zip(params, old))


def test_without_the_option_no_edge_has_a_skip_module():
    searcher = build_searcher(build_config({}, TINY + ["model.space=darts"]), log=quiet)
    assert all(layer.aux_skip is None for layer in searcher.choice_layers)


def test_nb201_edges_get_identity_and_mobilenet_only_its_shape_keeping_layers():
    nb201 = search_spaces.get("nb201").build_supernet(C=4, N=1, aux_skip=True)
    assert all(type(layer.aux_skip) is nn.Identity for _, _, layer in nb201.choice_layers())
    mobile = search_spaces.get("mobilenet").build_supernet(C=8, N=2, aux_skip=True)
    calls = _calls(mobile, mobile.architecture.sample("gdas", 1.0).detach(), torch.randn(2, 3, 16, 16))
    assert any(layer.aux_skip is None for layer, *_ in calls)  # the width-changing layers have none
    for layer, h, _, _, out in calls:
        keeps_shape = h.shape == out.shape
        assert (type(layer.aux_skip) is nn.Identity) if keeps_shape else (layer.aux_skip is None)


def test_aux_skip_in_a_space_without_it_is_a_one_line_error(monkeypatch):
    class NoSkipSpace(type(search_spaces.get("nb201"))):
        supernet_arguments = frozenset({"C", "N"})

        def build_supernet(self, mode="gdas", num_classes=10, C=16, N=5, in_channels=3):
            return super().build_supernet(mode, num_classes, C, N, in_channels)

    monkeypatch.setattr(nas.cli.build, "get_space", lambda name: NoSkipSpace())
    with pytest.raises(UserError, match="'search.aux_skip' is not available in the nb201 space"):
        build_searcher(build_config({}, TINY + ["search.aux_skip=true"]), log=quiet)
