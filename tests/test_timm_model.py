"""The searched networks behave as timm's own models: the same methods, shapes and conventions as
resnet18 / mobilenetv2_100, and a train_final.py run loads with timm.create_model(checkpoint_path=...)."""
import json

import pytest
import timm
import torch
import torch.nn as nn

import search_spaces
import train_final
from nas import UserError
from nas.engine.checkpoint import load_checkpoint
from nas.spaces.genotype import load_genotype
from search_spaces.mobilenet import round_channels

NB201_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
MOBILENET = search_spaces.get("mobilenet").random_genotype(torch.Generator().manual_seed(0)).format()
TINY = {"nb201_network": dict(genotype=NB201_ARCH, C=4, N=1),
        "darts_network": dict(genotype="DARTS_V2", C=4, N=1),
        "mobilenet_searched": dict(genotype=MOBILENET, C=8, head_width=64)}
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def resnet():
    return timm.create_model("resnet18", pretrained=False, num_classes=7).eval()


def ours(name, **kwargs):
    return timm.create_model(name, **{"num_classes": 7, **TINY[name], **kwargs}).eval()


@pytest.mark.parametrize("name", TINY)
def test_pretrained_cfg_names_real_modules_as_timm_models_do(name, resnet):
    model = ours(name)
    assert name in timm.list_models()
    for m in (model, resnet):
        cfg = m.pretrained_cfg
        assert m.default_cfg is cfg
        first = m.get_submodule(cfg["first_conv"])
        assert isinstance(first, nn.Conv2d) and first.in_channels == cfg["input_size"][0]
        assert m.get_submodule(cfg["classifier"]) is m.get_classifier()
        assert m.get_classifier().out_features == m.num_classes == 7
        assert len(cfg["mean"]) == len(cfg["std"]) == 3
    data = timm.data.resolve_data_config({}, model=model)
    assert data["input_size"] == (3, 32, 32) and data["mean"] == (0.4914, 0.4822, 0.4465)  # CIFAR-10, not ImageNet


@pytest.mark.parametrize("name", TINY)
@torch.no_grad()
def test_forward_is_features_then_head_as_in_resnet18(name, resnet):
    for m in (ours(name), resnet):
        f = m.forward_features(X)
        assert f.dim() == 4 and f.shape[:2] == (2, m.num_features)
        pooled = f.mean(dim=(2, 3))  # global average pooling, computed without the model's pool
        torch.testing.assert_close(m.forward_head(f, pre_logits=True), pooled)
        torch.testing.assert_close(m(X), m.get_classifier()(pooled))
        torch.testing.assert_close(m(X), m.forward_head(f))


@pytest.mark.parametrize("name", TINY)
@torch.no_grad()
def test_reset_classifier_as_in_resnet18(name):
    model, reference = ours(name), timm.create_model("resnet18", num_classes=7).eval()
    for m in (model, reference):
        features = m.forward_features(X)
        m.reset_classifier(0)  # pre-logit features
        assert isinstance(m.get_classifier(), nn.Identity) and m.num_classes == 0
        torch.testing.assert_close(m(X), features.mean(dim=(2, 3)))
        m.reset_classifier(5, global_pool="catavgmax")  # a new head on [avg, max] features
        assert m.head_hidden_size == 2 * m.num_features == m.get_classifier().in_features
        assert m(X).shape == (2, 5)
        expected = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        torch.testing.assert_close(m.forward_head(features, pre_logits=True), expected)
        m.reset_classifier(3)  # keeps the pooling type
        assert m.global_pool.pool_type == "catavgmax" and m(X).shape == (2, 3)


@torch.no_grad()
def test_reset_classifier_gives_the_darts_auxiliary_head_the_new_classes():
    model = ours("darts_network", auxiliary=True).train()
    logits, aux = model(X)
    assert logits.shape == aux.shape == (2, 7)
    model.reset_classifier(5)
    logits, aux = model(X)
    assert logits.shape == aux.shape == (2, 5)
    model.reset_classifier(0)
    out = model(X)  # no classes: no auxiliary logits either
    assert isinstance(out, torch.Tensor) and out.shape == (2, model.num_features)


@torch.no_grad()
def test_features_only_matches_mobilenetv2_conventions():
    x = torch.randn(1, 3, 64, 64)
    mine = timm.create_model("mobilenet_searched", features_only=True, input_size=224, **TINY["mobilenet_searched"])
    reference = timm.create_model("mobilenetv2_100", pretrained=False, features_only=True)
    for m in (mine, reference):
        outs = m(x)
        assert isinstance(outs, list) and len(outs) == len(m.feature_info.channels()) == 5
        for out, chs, red in zip(outs, m.feature_info.channels(), m.feature_info.reduction()):
            assert out.shape == (1, chs, 64 // red, 64 // red)
    assert mine.feature_info.reduction() == reference.feature_info.reduction() == [2, 4, 8, 16, 32]
    # The stages before each stride: c16, c24, c32, c96, c320 at width multiplier 8 / 32.
    assert mine.feature_info.channels() == [round_channels(c, 0.25) for c in (16, 24, 32, 96, 320)]
    cifar = timm.create_model("mobilenet_searched", features_only=True, **TINY["mobilenet_searched"])
    assert cifar.feature_info.reduction() == [1, 2, 4, 8]  # CIFAR layout: total stride 8
    assert [o.shape[-1] for o in cifar(torch.randn(1, 3, 32, 32))] == [32, 16, 8, 4]


@pytest.mark.parametrize("name, extra, words", [
    ("darts_network", {"Cc": 8}, ["'Cc'", "did you mean 'C'", "genotype, num_classes, C, N"]),
    ("nb201_network", {"drop_rate": 0.1}, ["'drop_rate'", "it takes genotype"]),
    ("nb201_network", {"features_only": True}, ["features_only", "forward_features"]),
    ("darts_network", {"features_only": True}, ["features_only", "forward_features"]),
    ("mobilenet_searched", {"pretrained": True}, ["no pretrained weights", "checkpoint_path"]),
    ("nb201_network", {"genotype": ""}, ["needs genotype"]),
])
def test_bad_arguments_are_one_line_naming_the_problem(name, extra, words):
    with pytest.raises(UserError) as e:
        timm.create_model(name, **{**TINY[name], **extra})
    message = str(e.value)
    assert "\n" not in message and all(w in message for w in words), message


@pytest.mark.slow
@pytest.mark.parametrize("space, genotype, extra", [
    ("nb201", NB201_ARCH, ["data.image_size=16"]),
    ("darts", "DARTS_V2", ["data.image_size=32", "train.auxiliary_weight=0.4", "train.drop_path_prob=0.2"]),
])
def test_a_retrained_network_loads_with_timm_create_model(tmp_path, space, genotype, extra):
    out = tmp_path / "final"
    assert train_final.main(["--genotype", genotype, "--out", str(out), "data.dataset=synthetic",
                             "data.synthetic_size=32", "data.batch_size=16", "model.C=4", "model.N=1",
                             f"model.space={space}", "train.epochs=1", *extra]) == 0
    recorded = json.loads((out / "model_args.json").read_text())
    model = timm.create_model(recorded["model_name"], checkpoint_path=str(out / "model.pth"),
                              **recorded["model_args"]).eval()
    # The reference: the network built from the run's genotype.yaml and config, with the weights of
    # its last training checkpoint (the project's own resume path).
    found, g = load_genotype(out / "genotype.yaml")
    reference = found.build_network(g, num_classes=recorded["model_args"]["num_classes"], C=4, N=1,
                                    auxiliary=space == "darts")
    reference.load_state_dict(load_checkpoint(out / "checkpoint.pt")["model"])
    x = torch.randn(4, 3, *(2 * [32 if space == "darts" else 16]))
    untrained = timm.create_model(recorded["model_name"], **recorded["model_args"]).eval()
    # timm also reads the training checkpoint itself (its "model" entry)
    from_checkpoint = timm.create_model(recorded["model_name"], checkpoint_path=str(out / "checkpoint.pt"),
                                        **recorded["model_args"]).eval()
    with torch.no_grad():
        assert torch.equal(model(x), reference.eval()(x))
        assert torch.equal(from_checkpoint(x), model(x))
        assert not torch.allclose(untrained(x), model(x))  # the weights did load
