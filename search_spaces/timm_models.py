"""timm entry points of the built-in spaces' discrete networks, built as timm builds its own models.

>>> import timm, search_spaces
>>> net = timm.create_model("darts_network", genotype="DARTS_V2", num_classes=10, C=16, N=2)
>>> net.pretrained_cfg["first_conv"], net.get_classifier()
('stem.0', Linear(in_features=256, out_features=10, bias=True))

Each entry point goes through timm's ``build_model_with_cfg`` with a
``pretrained_cfg`` (input size, mean/std of CIFAR-10, first conv, classifier),
so the networks carry ``pretrained_cfg``/``default_cfg`` and work with
``timm.data.resolve_data_config``, ``checkpoint_path=...``, ``reset_classifier``
and ``forward_features``/``forward_head``. ``features_only=True`` wraps
``mobilenet_searched`` (timm's EfficientNet) in timm's ``FeatureListNet``; the
cell networks have no feature pyramid and refuse it. An argument no entry
point takes (a typo such as ``Cc=16``) is refused with one line, as are
``pretrained=True`` (no weights exist) and a missing genotype.

``model_args`` is what ``train_final.py`` records in ``RUN/model_args.json``, so
that ``timm.create_model(name, checkpoint_path=RUN/model.pth, **args)`` rebuilds
the retrained network.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable

import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from nas.utils.errors import UserError
from .darts import DARTS_SPACE, PUBLISHED, Genotype, NetworkCIFAR
from .mobilenet import HEAD_WIDTH, SMALL_INPUT_MAX, STEM_WIDTH, MobileNetGenotype, SearchedEfficientNet
from .nb201 import NB201_SPACE, NB201Genotype, NB201Network

ENTRY_POINTS = {"nb201": "nb201_network", "darts": "darts_network", "mobilenet": "mobilenet_searched"}
# What timm's factory and build_model_with_cfg pass or take besides the model's own arguments.
TIMM_ARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "features_only", "out_indices", "feature_cls")
# CIFAR-10's per-channel statistics, as nas.data normalises CIFAR-10 (the configs' default dataset).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _cfg(first_conv: str, pool_size: tuple[int, int]) -> dict:
    return {"url": "", "num_classes": 10, "input_size": (3, 32, 32), "pool_size": pool_size, "crop_pct": 1.0,
            "interpolation": "bilinear", "mean": CIFAR10_MEAN, "std": CIFAR10_STD, "first_conv": first_conv,
            "classifier": "classifier"}


default_cfgs = generate_default_cfgs({  # register_model looks them up by entry-point name in this module
    "nb201_network": _cfg("stem.0", (8, 8)),
    "darts_network": _cfg("stem.0", (8, 8)),
    "mobilenet_searched": _cfg("conv_stem", (4, 4)),
})


# --------------------------------------------------------------------------- constructors (the accepted arguments)

def _nb201(genotype: str | NB201Genotype = "", num_classes: int = 10, C: int = 16, N: int = 5, in_chans: int = 3,
           global_pool: str = "avg") -> NB201Network:
    if not isinstance(genotype, NB201Genotype):
        genotype = NB201_SPACE.parse(genotype)
    return NB201Network(genotype, num_classes=num_classes, C=C, N=N, in_channels=in_chans, global_pool=global_pool)


def _darts(genotype: str | Genotype = "", num_classes: int = 10, C: int = 36, N: int = 6, in_chans: int = 3,
           auxiliary: bool = False, drop_path_prob: float = 0.0, global_pool: str = "avg") -> NetworkCIFAR:
    if isinstance(genotype, str) and genotype in PUBLISHED:
        genotype = PUBLISHED[genotype]
    if not isinstance(genotype, Genotype):
        genotype = DARTS_SPACE.parse(genotype)
    return NetworkCIFAR(genotype, num_classes=num_classes, C=C, N=N, in_channels=in_chans, auxiliary=auxiliary,
                        drop_path_prob=drop_path_prob, global_pool=global_pool)


def _mobilenet(genotype: str | MobileNetGenotype = "", num_classes: int = 10, C: int = STEM_WIDTH,
               in_chans: int = 3, input_size: int = 32, head_width: int = HEAD_WIDTH, drop_rate: float = 0.0,
               drop_path_rate: float = 0.0, global_pool: str = "avg") -> SearchedEfficientNet:
    if not isinstance(genotype, MobileNetGenotype):
        genotype = MobileNetGenotype.parse(genotype)
    return SearchedEfficientNet(genotype, num_classes=num_classes, C=C, in_chans=in_chans, input_size=input_size,
                                head_width=head_width, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                                global_pool=global_pool)


CONSTRUCTORS: dict[str, Callable[..., nn.Module]] = {
    "nb201_network": _nb201, "darts_network": _darts, "mobilenet_searched": _mobilenet}
_GENOTYPE_FORMS = {"nb201_network": "genotype='|op~0|+|...|' (an NB201 arch string)",
                   "darts_network": f"genotype='Genotype(normal=[...], ...)' or a published name "
                                    f"({', '.join(PUBLISHED)})",
                   "mobilenet_searched": "genotype=\"[['ir_r1_k3_s1_e6_c16'], ...]\" (a timm arch_def)"}


def accepted_arguments(variant: str) -> list[str]:
    """The architecture arguments an entry point takes (besides timm's own: ``TIMM_ARGS``)."""
    return list(inspect.signature(CONSTRUCTORS[variant]).parameters)


def _build(variant: str, pretrained: bool, kwargs: dict[str, Any], feature_levels: int = 0) -> nn.Module:
    """Checks the arguments, then builds through timm; ``feature_levels`` 0 refuses ``features_only``."""
    if pretrained:
        raise UserError(f"no pretrained weights exist for {variant} (a searched network); use pretrained=False "
                        "or checkpoint_path=RUN/model.pth of a train_final.py run")
    accepted = accepted_arguments(variant)
    unknown = [k for k in kwargs if k not in accepted and k not in TIMM_ARGS]
    if unknown:
        near = difflib.get_close_matches(unknown[0], accepted, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise UserError(f"{variant} got unknown argument{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))}{hint}; it takes {', '.join(accepted)}")
    if kwargs.get("features_only") and not feature_levels:
        raise UserError(f"{variant} has no feature pyramid for features_only=True; call "
                        "model.forward_features(x) for its last feature map (mobilenet_searched has features_only)")
    if not kwargs.get("genotype"):
        raise UserError(f"{variant} needs {_GENOTYPE_FORMS[variant]}")
    feature_cfg = {"flatten_sequential": True, "out_indices": tuple(range(feature_levels))}
    return build_model_with_cfg(CONSTRUCTORS[variant], variant, pretrained=False, feature_cfg=feature_cfg, **kwargs)


@register_model
def nb201_network(pretrained: bool = False, **kwargs) -> NB201Network:
    """``timm.create_model("nb201_network", genotype="|...|", num_classes=10, C=16, N=5)``."""
    return _build("nb201_network", pretrained, kwargs)


@register_model
def darts_network(pretrained: bool = False, **kwargs) -> NetworkCIFAR:
    """``timm.create_model("darts_network", genotype="DARTS_V2" or "Genotype(...)", num_classes=10, C=36, N=6)``."""
    return _build("darts_network", pretrained, kwargs)


@register_model
def mobilenet_searched(pretrained: bool = False, **kwargs) -> SearchedEfficientNet:
    """``timm.create_model("mobilenet_searched", genotype="[['ir_r1_k3_s1_e6_c16'], ...]", input_size=32)``.

    ``features_only=True``: the outputs of the stages before each stride (4 levels up to
    ``SMALL_INPUT_MAX`` pixels, the CIFAR layout; 5 with ImageNet strides), as timm's EfficientNet.
    """
    levels = 4 if kwargs.get("input_size", 32) <= SMALL_INPUT_MAX else 5
    return _build("mobilenet_searched", pretrained, kwargs, feature_levels=levels)


def model_args(space: str, genotype: str, num_classes: int, C: int, N: int, in_chans: int,
               auxiliary: bool = False, input_size: int = 32) -> dict[str, Any]:
    """The ``timm.create_model`` name and arguments that rebuild a network ``space.build_network`` made.

    Returns:
        ``{"model_name": ..., "model_args": {...}}`` with only the arguments the entry point takes.
    """
    if space not in ENTRY_POINTS:
        raise UserError(f"the {space} space has no timm entry point (built-in: {', '.join(ENTRY_POINTS)})")
    name = ENTRY_POINTS[space]
    given = {"genotype": genotype, "num_classes": num_classes, "C": C, "N": N, "in_chans": in_chans,
             "auxiliary": auxiliary, "input_size": input_size}
    accepted = accepted_arguments(name)
    return {"model_name": name, "model_args": {k: v for k, v in given.items() if k in accepted}}
