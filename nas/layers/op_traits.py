"""What an op is, declared by the op (or by the space that lists it), never guessed from its name.

Three facts about a candidate op change what the library does with it:

- ``zero``: it outputs zeros, i.e. it cuts the edge. A soft mixture skips it
  (its term and its weight's gradient are exactly zero), an edge a genotype
  drops runs it, it costs nothing, and derivation may exclude it.
- ``parameter_free``: it has no learnable parameters (pools, skip, zero). The
  ``model.max_parameter_free`` derivation cap counts these (zero ops aside).
- ``skip``: it is identity-like (a skip connection, or the strided factorized
  reduction a DARTS ``skip_connect`` becomes in a reduction cell). The
  ``model.max_skip`` cap counts these.

A space declares the traits of each of its op names (``SearchSpace.op_traits``);
an op module may declare its own as an ``op_traits`` attribute (``Zero`` does),
which a ``ChoiceLayer`` built without explicit traits reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch.nn as nn


@dataclass(frozen=True)
class OpTraits:
    """The declared traits of one candidate op (see the module docstring)."""

    zero: bool = False
    parameter_free: bool = False
    skip: bool = False

    def __post_init__(self):
        if self.zero and not self.parameter_free:
            raise ValueError("an op that outputs zeros has no parameters: declare parameter_free=True with zero=True")
        if self.zero and self.skip:
            raise ValueError("an op cannot both output zeros and be identity-like (zero and skip)")


LEARNED = OpTraits()                                  # convolutions, blocks: parameters, nothing special
ZERO = OpTraits(zero=True, parameter_free=True)       # cuts the edge
SKIP = OpTraits(parameter_free=True, skip=True)       # identity (or a strided stand-in for it)
PARAMETER_FREE = OpTraits(parameter_free=True)        # pools


def op_traits_of(module: nn.Module, default: OpTraits = LEARNED) -> OpTraits:
    """The traits an op module declares in its ``op_traits`` attribute, else ``default``."""
    traits = getattr(module, "op_traits", None)
    if traits is None:
        return default
    if not isinstance(traits, OpTraits):
        raise TypeError(f"{type(module).__name__}.op_traits must be an OpTraits, got {type(traits).__name__}")
    return traits


def ops_with(traits: Mapping[str, OpTraits], **flags: bool) -> list[str]:
    """Op names (in ``traits`` order) whose traits match every flag, e.g. ``ops_with(t, zero=True)``."""
    unknown = set(flags) - {"zero", "parameter_free", "skip"}
    if unknown:
        raise TypeError(f"unknown op trait(s): {', '.join(sorted(unknown))}")
    return [name for name, t in traits.items() if all(getattr(t, k) == v for k, v in flags.items())]


def check_declared(owner: str, op_names: Iterable[str], traits: Mapping[str, OpTraits]) -> None:
    """Raises ``ValueError`` unless ``traits`` declares an ``OpTraits`` for exactly the names ``op_names``."""
    names = list(op_names)
    missing = [n for n in names if n not in traits]
    extra = [n for n in traits if n not in names]
    if missing or extra:
        raise ValueError(f"{owner} must declare the traits of exactly its ops {names}: "
                         f"missing {missing}, not its ops {extra}")
    wrong = [n for n in names if not isinstance(traits[n], OpTraits)]
    if wrong:
        raise ValueError(f"{owner} declares traits of {wrong} that are not OpTraits")
