"""Anti-collapse options: DARTS- auxiliary skip, derivation caps, SDARTS-RS random smoothing, logit clipping."""
import pytest
import torch

import search_spaces
from nas import ChoiceLayer
from nas.cli.build import build_searcher
from nas.config import build_config
from nas.spaces.derive import derive_with_caps

TINY = ["data.dataset=synthetic", "data.synthetic_size=64", "data.image_size=8", "data.batch_size=16",
        "model.C=4", "model.N=1", "search.epochs=5", "seed=1"]


def quiet(*_):
    pass


def test_aux_skip_beta_decays_linearly_from_one_to_zero():
    searcher = build_searcher(build_config({}, TINY + ["search.aux_skip=true"]), log=quiet)
    betas = []
    for epoch in range(5):
        searcher.train_epoch(epoch)
        values = {layer.skip_beta for layer in searcher.choice_layers}
        assert len(values) == 1
        betas.append(values.pop())
    assert betas == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_aux_skip_adds_beta_times_the_input_on_an_identity_path():
    layer = ChoiceLayer({"none": search_spaces.nb201.OPS["none"](4, 4, 1, False, False),
                         "conv": search_spaces.nb201.OPS["nor_conv_3x3"](4, 4, 1, False, False)},
                        aux_skip=torch.nn.Identity())
    x = torch.randn(2, 4, 6, 6)
    w = torch.tensor([0.0, 1.0])
    plain = layer(x, w, 1)
    layer.skip_beta = 0.3
    torch.testing.assert_close(layer(x, w, 1), plain + 0.3 * x)
    torch.testing.assert_close(layer(x, torch.tensor([1.0, 0.0]), 0), 0.3 * x)  # even a sampled `none`


def test_without_the_option_the_supernet_output_is_unchanged():
    searcher = build_searcher(build_config({}, TINY), log=quiet)
    searcher.train_epoch(0)
    assert all(layer.skip_beta == 0.0 for layer in searcher.choice_layers)


def test_nb201_skip_cap_on_hand_made_probabilities():
    space = search_spaces.get("nb201")
    probs = torch.tensor([[0.05, 0.60, 0.10, 0.20, 0.05],   # skip, then conv3
                          [0.05, 0.50, 0.30, 0.10, 0.05],   # skip, then conv1
                          [0.05, 0.70, 0.05, 0.15, 0.05],   # skip (strongest: kept)
                          [0.05, 0.40, 0.05, 0.05, 0.45],   # pool
                          [0.05, 0.55, 0.05, 0.30, 0.05],   # skip, then conv3
                          [0.10, 0.20, 0.30, 0.30, 0.10]])  # conv1 (tie with conv3: lower index)
    uncapped = space.derive_genotype({"cell": probs})
    assert uncapped.edge_ops().count("skip_connect") == 4
    capped = derive_with_caps(space, {"cell": probs}, max_skip=1)
    assert capped.edge_ops() == ["nor_conv_3x3", "nor_conv_1x1", "skip_connect", "avg_pool_3x3",
                                 "nor_conv_3x3", "nor_conv_1x1"]
    free = derive_with_caps(space, {"cell": probs}, max_parameter_free=1)
    assert sum(op in ("skip_connect", "avg_pool_3x3") for op in free.edge_ops()) == 1
    assert free.edge_ops()[2] == "skip_connect"  # the strongest parameter-free choice survives


def test_darts_skip_cap_keeps_each_cell_under_the_cap():
    space = search_spaces.get("darts")
    probs = {"normal": torch.full((14, 8), 0.05), "reduce": torch.full((14, 8), 0.05)}
    probs["normal"][:, 3] = torch.linspace(0.9, 0.5, 14)  # skip_connect everywhere
    probs["normal"][:, 4] = 0.3                           # sep_conv_3x3 runner-up
    genotype = derive_with_caps(space, probs, max_skip=2)
    ops = [op for op, _ in genotype.normal]
    assert ops.count("skip_connect") == 2 and ops.count("sep_conv_3x3") == 6
    assert space.derive_genotype(probs).normal.count(("skip_connect", 0)) >= 1  # uncapped: all skip
    assert [op for op, _ in space.derive_genotype(probs).normal].count("skip_connect") == 8


# --------------------------------------------------------------------------- SDARTS-RS

def _reference_perturb(probs, epsilon, rng):
    """SDARTS-RS's Random_alpha + clip(), row by row in float64 Python, with its own RNG."""
    out = []
    for row in probs.double().tolist():
        noisy = [p + rng.uniform(-epsilon, epsilon) for p in row]
        best = max(range(len(noisy)), key=noisy.__getitem__)
        clipped = [min(max(v, 0.0), 1.0) for v in noisy]
        if sum(clipped) == 0.0:
            clipped[best] = 1.0
        out.append([v / sum(clipped) for v in clipped])
    return torch.tensor(out, dtype=torch.float64)


def _ks_distance(a, b):
    """Two-sample Kolmogorov-Smirnov statistic of 1-D samples."""
    grid = torch.cat([a, b]).sort().values
    cdf = lambda x: torch.searchsorted(x.sort().values, grid, right=True).double() / x.numel()
    return (cdf(a) - cdf(b)).abs().max().item()


def test_clip_rows_clamps_renormalises_and_revives_an_all_zero_row_at_its_argmax():
    from nas.sampling.sdarts import clip_rows
    rows = torch.tensor([[1.2, 0.3, -0.1],      # clamp to [1, 0.3, 0], then / 1.3
                         [-0.1, -0.2, -0.05],   # all clipped to 0: 1 at the argmax (before clamping)
                         [0.2, 0.2, 0.1]])      # in range: only renormalised
    torch.testing.assert_close(clip_rows(rows), torch.tensor([[1 / 1.3, 0.3 / 1.3, 0.0], [0.0, 0.0, 1.0],
                                                              [0.4, 0.4, 0.2]]))


@pytest.mark.parametrize("epsilon", [0.03, 0.3, 0.9])
def test_perturbed_weights_are_distributions_and_match_a_reference_implementation(epsilon):
    from nas.sampling.sdarts import perturb
    import random
    probs = torch.softmax(torch.tensor([[2.0, 0.0, -1.0, 0.5, 0.0], [0.0] * 5, [-3.0, 4.0, 0.0, 0.0, 1.0]]), -1)
    n = 4000
    gen = torch.Generator().manual_seed(0)
    ours = torch.stack([perturb(probs, epsilon, gen) for _ in range(n)]).double()  # [n, 3, 5]
    assert (ours >= 0).all() and (ours <= 1).all()
    torch.testing.assert_close(ours.sum(-1), torch.ones(n, 3, dtype=torch.float64), rtol=0, atol=1e-6)
    rng = random.Random(1)
    ref = torch.stack([_reference_perturb(probs, epsilon, rng) for _ in range(n)])
    # Each weight's marginal distribution matches the published procedure (KS distance of two
    # samples of 4000: about 0.03 for equal distributions; 0.06 is beyond 1e-5 chance).
    for e in range(3):
        for k in range(5):
            assert _ks_distance(ours[:, e, k], ref[:, e, k]) < 0.06, (e, k)
    assert (ours - probs.double()).abs().amax().item() > 0.5 * epsilon  # the noise has its full radius


def test_perturbation_noise_is_uniform_on_minus_eps_to_eps_from_the_given_generator():
    from nas.sampling.sdarts import perturb
    eps = 0.1
    probs = torch.full((1, 5), 0.2)  # every weight in [eps, 1 - eps]: nothing is clipped
    gen = torch.Generator().manual_seed(3)
    state = gen.get_state()
    w = torch.stack([perturb(probs, eps, gen)[0] for _ in range(20000)]).double()  # [n, 5]
    gen.set_state(state)
    u = torch.stack([(2 * torch.rand(1, 5, generator=gen) - 1)[0] * eps for _ in range(20000)]).double()
    torch.testing.assert_close(w, (0.2 + u) / (1 + u.sum(-1, keepdim=True)), rtol=0, atol=1e-6)
    # The noise itself: U(-eps, eps), mean 0, variance eps^2 / 3, filling its range.
    assert abs(u.mean().item()) < 1e-3 and u.var().item() == pytest.approx(eps ** 2 / 3, rel=0.02)
    assert u.min().item() > -eps and u.max().item() < eps and u.abs().max().item() > 0.999 * eps
    assert w.mean(0).sub(0.2).abs().max().item() < 2e-3  # unbiased weights: E[w_i] = 1/5 by symmetry


def test_masked_ops_get_no_weight_under_perturbation():
    from nas.sampling.sdarts import perturb
    allowed = torch.tensor([[True, True, False], [True, False, False]])
    probs = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        w = perturb(probs, 0.9, gen, allowed)
        assert (w[~allowed] == 0).all() and torch.allclose(w.sum(-1), torch.ones(2))


def test_sdarts_epsilon_ramps_linearly_from_0_03_to_the_configured_value():
    from nas.sampling.sdarts import epsilon_at
    searcher = build_searcher(build_config({}, TINY + ["model.mode=darts", "search.sdarts_epsilon=0.3"]), log=quiet)
    seen = []
    original = searcher.supernet.architecture.sample_many
    def spy(*args, **kwargs):
        if "sdarts_epsilon" in kwargs:  # the search loop's draws (evaluation derives without it)
            seen.append(kwargs["sdarts_epsilon"])
        return original(*args, **kwargs)
    searcher.supernet.architecture.sample_many = spy
    per_epoch = []
    for epoch in range(5):
        seen.clear()
        searcher.train_epoch(epoch)
        assert len(set(seen)) == 1
        per_epoch.append(seen[0])
    assert per_epoch == pytest.approx([0.03 + (0.3 - 0.03) * e / 5 for e in range(5)])
    assert per_epoch[0] == pytest.approx(0.03) and epsilon_at(5, 5, 0.3) == pytest.approx(0.3)
    assert epsilon_at(3, 5, 0.0) == 0.0


@pytest.mark.parametrize("mode", ["darts", "gdas", "snas"])
def test_sdarts_perturbs_only_the_weight_steps_sample(mode):
    searcher = build_searcher(build_config({}, TINY + [f"model.mode={mode}", "search.sdarts_epsilon=0.5"]),
                              log=quiet)
    seen = {}
    for name in ("weight_step", "arch_step"):
        original = getattr(searcher, name)
        def spy(x, y, sample, original=original, name=name):
            seen.setdefault(name, sample)
            return original(x, y, sample)
        setattr(searcher, name, spy)
    arch = searcher.supernet.architecture
    logits = arch.logits["cell"].detach().clone()
    state = arch.generator.get_state()
    searcher.train_epoch(2)  # eps = 0.03 + 0.47 * 2 / 5 = 0.218
    eps = 0.03 + (0.5 - 0.03) * 2 / 5
    # Replay the first iteration's draws from the sampler's generator: the noise of the weight
    # step's weights comes first, then the Gumbel noise of each sample in order.
    from nas.sampling.gumbel import gumbel_softmax_sample
    from nas.sampling.sdarts import perturb
    gen = torch.Generator().manual_seed(0)
    gen.set_state(state)
    exact = torch.softmax(logits, -1)
    weights = perturb(exact, eps, gen)
    assert (weights != exact).any()
    if mode == "darts":
        torch.testing.assert_close(seen["weight_step"].coefficients["cell"], weights, rtol=0, atol=0)
        assert torch.equal(seen["arch_step"].coefficients["cell"], exact)  # the arch step: the true architecture
        return
    tau = searcher.supernet.tau
    first = gumbel_softmax_sample(torch.where(weights > 0, weights.log(), torch.full_like(weights, -1e9)),
                                  tau=tau, generator=gen)
    second = gumbel_softmax_sample(logits, tau=tau, generator=gen)  # drawn from the unperturbed logits
    pick = (lambda s: s[1]) if mode == "gdas" else (lambda s: s[0])
    torch.testing.assert_close(seen["weight_step"].coefficients["cell"], pick(first), rtol=0, atol=0)
    torch.testing.assert_close(seen["arch_step"].coefficients["cell"].detach(), pick(second).detach(), rtol=0, atol=0)


def test_gdas_weight_step_samples_follow_the_perturbed_distribution_and_arch_steps_the_logits():
    # Statistics over many draws: the weight step's hard samples are distributed as E[perturbed weights]
    # (computed by the reference implementation), the arch step's as softmax(logits).
    import random
    arch = search_spaces.get("nb201").build_supernet(C=4, N=1).architecture
    with torch.no_grad():
        arch.logits["cell"].copy_(torch.tensor([[3.0, 0.0, 0.0, 0.0, -1.0]] * 6))
    arch.seed(0)
    n, eps = 6000, 0.3
    first, second = torch.zeros(6, 5), torch.zeros(6, 5)
    for _ in range(n):
        (a, b), _ = arch.sample_many("gdas", 1.0, 2, sdarts_epsilon=eps)
        first += a.coefficients["cell"].detach()
        second += b.coefficients["cell"].detach()
    probs = torch.softmax(arch.logits["cell"].detach(), -1)
    rng = random.Random(0)
    expected = torch.stack([_reference_perturb(probs[:1], eps, rng)[0] for _ in range(20000)]).mean(0).float()
    # Binomial standard error over 6 edges x 6000 draws: at most sqrt(0.25 / 36000) ~ 0.0026.
    assert (first / n).mean(0).sub(expected).abs().max().item() < 0.012
    assert (second / n).mean(0).sub(probs[0]).abs().max().item() < 0.012
    assert (expected - probs[0]).abs().max().item() > 0.05  # the two distributions do differ


def test_old_perturbation_key_names_the_new_one():
    from nas.utils.errors import UserError
    with pytest.raises(UserError, match="search.sdarts_epsilon") as info:
        build_config({"search": {"perturb_logits": 0.5}})
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="search.sdarts_epsilon"):
        build_config({}, ["search.perturb_logits=0.5"])
    with pytest.raises(UserError, match="search.sdarts_epsilon.*>= 0.03"):
        build_config({}, ["search.sdarts_epsilon=0.01"])
    # An older run's resolved config.yaml holds the key at 0 (off): it still loads, as the default.
    assert build_config({"search": {"perturb_logits": 0.0}}) == build_config({})


def test_arch_grad_clip_bounds_the_logit_gradient():
    searcher = build_searcher(build_config({}, TINY + ["search.arch_grad_clip=1e-4"]), log=quiet)
    x, y = next(searcher.data.val.epoch(0))
    searcher.arch_step(x, y)
    grad = searcher.supernet.architecture.logits["cell"].grad
    assert grad.norm().item() == pytest.approx(1e-4, rel=1e-3)


def test_derive_exclude_never_derives_none_and_otherwise_keeps_the_argmax():
    space = search_spaces.get("nb201")
    probs = torch.tensor([[0.60, 0.10, 0.15, 0.10, 0.05],   # none, then conv1
                          [0.05, 0.50, 0.30, 0.10, 0.05],   # skip
                          [0.40, 0.05, 0.05, 0.45, 0.05],   # conv3 (already ahead of none)
                          [0.70, 0.05, 0.05, 0.05, 0.15],   # none, then pool
                          [0.55, 0.05, 0.05, 0.30, 0.05],   # none, then conv3
                          [0.10, 0.20, 0.30, 0.30, 0.10]])  # conv1 (tie with conv3: lower index)
    assert space.derive_genotype({"cell": probs}).edge_ops().count("none") == 3
    derived = derive_with_caps(space, {"cell": probs}, exclude=["none"])
    assert derived.edge_ops() == ["nor_conv_1x1", "skip_connect", "nor_conv_3x3", "avg_pool_3x3",
                                  "nor_conv_3x3", "nor_conv_1x1"]


@pytest.mark.parametrize("exclude, message", [
    (["nonee"], "'nonee', which is not an op of nb201"),
    (["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"], "excludes every op"),
])
def test_derive_exclude_rejects_unknown_or_all_ops(exclude, message):
    from nas.utils.errors import UserError
    with pytest.raises(UserError, match=message):
        build_searcher(build_config({}, TINY + [f"model.derive_exclude={exclude}"]), log=quiet)


def test_searcher_with_derive_exclude_writes_a_genotype_without_none(tmp_path):
    searcher = build_searcher(build_config({}, TINY + ["model.derive_exclude=[none]", "search.epochs=2"]),
                              out_dir=tmp_path, log=quiet)
    searcher.run()
    text = (tmp_path / "genotype.yaml").read_text()
    assert "genotype: '|" in text and "none~" not in text


# --------------------------------------------------------------------------- PC-DARTS edge normalisation

DARTS_TINY = ["model.space=darts", "data.dataset=synthetic", "data.synthetic_size=32", "data.image_size=8",
              "data.batch_size=8", "model.C=4", "model.N=1", "search.epochs=1", "seed=2"]


def test_edge_weights_are_a_softmax_over_each_nodes_inputs():
    supernet = search_spaces.get("darts").build_supernet(C=4, N=1, edge_normalization=True)
    arch = supernet.architecture
    with torch.no_grad():
        arch.edge_logits["normal"].copy_(torch.arange(14.0))
    weights = arch.edge_coefficients()["normal"]
    edges = search_spaces.darts.EDGES
    for node in range(2, 6):
        rows = [e for e, (to, _) in enumerate(edges) if to == node]
        torch.testing.assert_close(weights[rows].sum(), torch.tensor(1.0))
        torch.testing.assert_close(weights[rows], torch.softmax(torch.arange(14.0)[rows], 0))


def test_edge_logits_are_arch_parameters_in_the_state_dict_and_learn_in_the_arch_step():
    searcher = build_searcher(build_config({}, DARTS_TINY + ["model.edge_normalization=true"]), log=quiet)
    supernet = searcher.supernet
    edge_params = list(supernet.architecture.edge_logits.values())
    assert all(any(p is q for q in supernet.arch_parameters()) for p in edge_params)
    assert not any(p is q for p in edge_params for q in supernet.weight_parameters())
    assert {"architecture.edge_logits.normal", "architecture.edge_logits.reduce"} <= set(supernet.state_dict())
    before = [p.detach().clone() for p in edge_params]
    x, y = next(iter(searcher.data.val.epoch(0)))
    searcher.weight_step(x, y)
    assert all(torch.equal(b, p) for b, p in zip(before, edge_params))  # the weight step leaves them alone
    searcher.arch_step(x, y)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in edge_params)
    assert not all(torch.equal(b, p) for b, p in zip(before, edge_params))


def test_edge_weights_scale_the_node_sums():
    torch.manual_seed(0)
    supernet = search_spaces.get("darts").build_supernet(mode="darts", C=4, N=1, edge_normalization=True).eval()
    plain = search_spaces.get("darts").build_supernet(mode="darts", C=4, N=1)
    plain.load_state_dict({k: v for k, v in supernet.state_dict().items() if "edge_logits" not in k})
    plain.eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        supernet.architecture.edge_logits["normal"].fill_(0.0)
        supernet.architecture.edge_logits["reduce"].fill_(0.0)
        assert not torch.allclose(supernet(x), plain(x))  # uniform weights still rescale the nodes


def test_derivation_ranks_inputs_by_edge_weight_times_op_probability():
    supernet = search_spaces.get("darts").build_supernet(C=4, N=1, edge_normalization=True)
    arch = supernet.architecture
    edges = search_spaces.darts.EDGES
    with torch.no_grad():
        for group in ("normal", "reduce"):
            arch.logits[group].zero_()
            arch.logits[group][:, 4] = 2.0  # sep_conv_3x3 on every edge, equally strong
            arch.edge_logits[group].zero_()
            for e, (to, j) in enumerate(edges):
                if j == to - 1:
                    arch.edge_logits[group][e] = 3.0  # the previous node is the favourite input
                if j == to - 2:
                    arch.edge_logits[group][e] = 1.0
    space = search_spaces.get("darts")
    genotype = space.derive_genotype(arch.derivation_scores())
    assert [j for _, j in genotype.normal] == [1, 0, 2, 1, 3, 2, 4, 3]
    # without the edge coefficients every input ties and the lower inputs win
    assert [j for _, j in space.derive_genotype(arch.probabilities()).normal] == [0, 1, 0, 1, 0, 1, 0, 1]


def test_edge_normalization_is_refused_outside_the_darts_space():
    from nas.utils.errors import UserError
    with pytest.raises(UserError, match="only darts has it"):
        build_searcher(build_config({}, TINY + ["model.edge_normalization=true"]), log=quiet)
