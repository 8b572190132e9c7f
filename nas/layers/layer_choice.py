"""``LayerChoice``: a place to search, marked inside an ordinary ``nn.Module``.

A user writes a network as usual and puts ``LayerChoice({"conv3": ..., "conv5": ...})``
where a layer should be searched (as NNI's ``LayerChoice``). ``nas.spaces.module_space``
finds these, owns their logits in one ``Architecture`` and, for every forward pass,
hands each of them its row of the sample. The choice itself runs in a ``ChoiceLayer``
(``nas.layers.choice``), so a LayerChoice gets the same GDAS straight-through gates,
soft modes and genotype runs as the built-in spaces: in a hard sample only the
sampled candidate runs.
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn

from .choice import ChoiceLayer
from .gates import SAMPLED_OP
from .op_traits import LEARNED, PARAMETER_FREE, SKIP, ZERO, OpTraits, op_traits_of

_NAME = re.compile(r"[A-Za-z0-9_.\-+]+")  # no '=', ',' or spaces: they separate a genotype string's parts


class Unavailable(nn.Module):
    """The column of an op a LayerChoice does not offer (its logit is masked, so it is never sampled).

    Declared a zero op, so the soft mixtures leave it out; it returns zeros of the input's
    shape, so a cost probe finds it free.
    """

    op_traits = ZERO

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape)


class LayerChoice(nn.Module):
    """Chooses one of several candidate modules; the search decides which.

    Args:
        candidates: name -> module, or a list (named ``"0"``, ``"1"``, ...). Every candidate
            must map the layer's input to an output of the same shape.
        label: The choice's name in genotypes and logs (default: its module path). LayerChoices
            with the same label share one decision (their candidate names must match).
        traits: candidate name -> its ``OpTraits`` (``nas.layers.op_traits``: zero, parameter-free,
            skip), for the derivation caps and costs. Default: a module's own ``op_traits``
            attribute, else ``SKIP`` for ``nn.Identity``, ``PARAMETER_FREE`` for a module
            without parameters, ``LEARNED`` otherwise.

    Outside a ``ModuleSpace`` supernet a LayerChoice cannot run: derive a network first
    (``ModuleSpace.derive_module`` or ``build_network``), which replaces it by the chosen candidate.
    """

    def __init__(self, candidates: dict[str, nn.Module] | list[nn.Module] | tuple, label: str | None = None,
                 traits: dict[str, OpTraits] | None = None):
        super().__init__()
        if isinstance(candidates, (list, tuple)):
            candidates = {str(i): m for i, m in enumerate(candidates)}
        if not isinstance(candidates, dict) or not candidates:
            raise ValueError("LayerChoice needs a non-empty dict (name -> module) or list of candidate modules")
        for name, module in candidates.items():
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ValueError(f"LayerChoice candidate name {name!r} must be letters, digits and _ . - + only")
            if not isinstance(module, nn.Module):
                raise ValueError(f"LayerChoice candidate {name!r} is a {type(module).__name__}, not an nn.Module")
        if label is not None and not _NAME.fullmatch(label):
            raise ValueError(f"LayerChoice label {label!r} must be letters, digits and _ . - + only")
        unknown = sorted(set(traits or {}) - set(candidates))
        if unknown:
            raise ValueError(f"LayerChoice traits name {unknown}, which are not among its candidates {list(candidates)}")
        self.label = label
        self.candidate_names = list(candidates)
        self.traits = {name: (traits or {}).get(name) or op_traits_of(m, _evident_traits(m))
                       for name, m in candidates.items()}
        # The candidates live in the choice layer (state_dict keys ``choice.ops.<column>``); ``bind`` widens it
        # to the space's op columns.
        self.choice = ChoiceLayer(dict(candidates), gdas_gate=SAMPLED_OP, traits=self.traits)
        self.current: tuple[torch.Tensor, object] | None = None  # set by the supernet for one forward pass

    def candidate(self, name: str) -> nn.Module:
        """The candidate module called ``name``."""
        if name not in self.candidate_names:
            raise KeyError(f"LayerChoice {self.label!r} has no candidate {name!r} ({', '.join(self.candidate_names)})")
        return self.choice.ops[self.choice.op_names.index(name)]

    def bind(self, op_names: list[str], gdas_gate: str = SAMPLED_OP) -> None:
        """Lays the candidates out in the space's op columns ``op_names`` (the logits' column order).

        A column this choice does not offer holds an ``Unavailable`` placeholder; its logit is
        masked by the space, and the soft mixtures leave it out.
        """
        ops = {name: (self.candidate(name) if name in self.candidate_names else Unavailable()) for name in op_names}
        traits = {name: self.traits.get(name, ZERO) for name in op_names}
        self.choice = ChoiceLayer(ops, gdas_gate=gdas_gate, traits=traits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Runs the candidate(s) of the current sample row: ``[B, ...]`` -> the candidates' output shape."""
        if self.current is None:
            raise RuntimeError(f"LayerChoice {self.label!r} ran outside a ModuleSpace supernet; derive a network "
                               "with ModuleSpace.derive_module or build_network to run the chosen candidate")
        coefficients, index = self.current
        return self.choice(x, coefficients, index)


def _evident_traits(module: nn.Module) -> OpTraits:
    # What the module's type and parameters show (a module states anything else in its op_traits).
    if type(module) is nn.Identity:
        return SKIP
    return LEARNED if any(True for _ in module.parameters()) else PARAMETER_FREE


def find_layer_choices(module: nn.Module) -> list[tuple[str, str, LayerChoice]]:
    """Every ``LayerChoice`` in ``module`` as ``(module path, label, layer)``, in module order.

    A LayerChoice without a label is named by its path. Raises ``ValueError`` for a LayerChoice
    inside another one's candidate.
    """
    found = []
    for path, m in module.named_modules(remove_duplicate=False):
        if isinstance(m, LayerChoice):
            outer = next((p for p, _, _ in found if path.startswith(p + ".")), None)
            if outer is not None:
                raise ValueError(f"LayerChoice {path!r} is inside LayerChoice {outer!r}; nested choices are "
                                 "not supported: give the outer one a candidate per combination")
            label = m.label if m.label is not None else path
            if not _NAME.fullmatch(label or "-"):
                raise ValueError(f"LayerChoice at {path!r} needs a label (letters, digits and _ . - + only)")
            found.append((path, label, m))
    return found
