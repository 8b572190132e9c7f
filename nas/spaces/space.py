"""The interface every search space implements, and the lookup by name."""
from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn as nn

from .registry import SEARCH_SPACES
from ..layers.op_traits import OpTraits, check_declared
from ..layers.supernet import Supernet


class SearchSpace:
    """A search space: its ops, supernet, discrete network and genotype format.

    Subclasses set ``name`` and ``op_names``, declare the traits of every op
    (``op_traits``) and implement the methods below; an instance is registered
    with ``register_space``, which checks the declarations.
    """

    name: str = ""
    op_names: tuple[str, ...] = ()
    derivation_rules: tuple[str, ...] = ("argmax",)  # the first is the default
    # The keyword arguments ``build_supernet`` / ``build_network`` take beyond the ones every space
    # takes (``SUPERNET_CORE`` / ``NETWORK_CORE``), e.g. ``C``, ``N``, ``input_size``. What builds a
    # space from a config passes exactly these and refuses a setting for one the space lacks;
    # ``register_space`` checks them against the signatures.
    supernet_arguments: frozenset[str] = frozenset()
    network_arguments: frozenset[str] = frozenset()
    published: dict[str, Any] = {}  # name -> genotype of published cells (``--genotype DARTS_V2``)

    def op_traits(self) -> dict[str, OpTraits]:
        """op name -> its declared ``OpTraits`` (zero, parameter-free, skip), for every name in ``op_names``.

        Derivation caps and exclusions, cost tables, soft mixtures and plots read these,
        never the op names.
        """
        raise NotImplementedError

    def build_supernet(self, mode: str = "gdas", num_classes: int = 10, **kwargs: Any) -> Supernet:
        """Builds the search supernet whose forward returns class logits."""
        raise NotImplementedError

    def build_network(self, genotype: Any, num_classes: int = 10, **kwargs: Any) -> nn.Module:
        """Builds the discrete network of a genotype (a record or its string)."""
        raise NotImplementedError

    def derive_genotype(self, probabilities: dict[str, torch.Tensor], rule: str | None = None) -> Any:
        """Derives the discrete genotype from per-group probabilities ``[num_edges, num_ops]``.

        Args:
            probabilities: group -> ``softmax(logits)``.
            rule: One of ``derivation_rules``; None for the space's default.
        """
        raise NotImplementedError

    def parse(self, text: str) -> Any:
        """Parses the space's native genotype string; raises ``UserError`` if malformed."""
        raise NotImplementedError

    def format(self, genotype: Any) -> str:
        """Formats a genotype as the space's native string."""
        raise NotImplementedError

    def edge_names(self) -> dict[str, list[str]]:
        """group -> a readable name per edge, in logit row order (for logs and plots)."""
        raise NotImplementedError

    def cell_graphs(self, genotype: Any) -> dict[str, list[tuple[str, str, str]]]:
        """cell kind -> ``(from_node, to_node, op)`` edges of the derived cell, zero ops left out (for diagrams)."""
        raise NotImplementedError

    def genotype_edges(self, genotype: Any) -> list[tuple[str, int, str]]:
        """The ``(group, logit row, op)`` of every edge the genotype keeps (for derivation caps)."""
        raise NotImplementedError

    def random_genotype(self, generator: torch.Generator | None = None) -> Any:
        """A genotype drawn uniformly from the space."""
        raise NotImplementedError


SUPERNET_CORE = frozenset({"mode", "num_classes", "in_channels"})
NETWORK_CORE = frozenset({"genotype", "num_classes", "in_channels"})


def check_arguments(space: SearchSpace) -> None:
    """Raises ``ValueError`` unless ``supernet_arguments`` / ``network_arguments`` name exactly the
    keyword arguments of ``build_supernet`` / ``build_network`` beyond the core ones."""
    for method, attr, core in ((space.build_supernet, "supernet_arguments", SUPERNET_CORE),
                               (space.build_network, "network_arguments", NETWORK_CORE)):
        declared = getattr(space, attr)
        params = inspect.signature(method).parameters
        missing_core = sorted(core - set(params))
        if missing_core:
            raise ValueError(f"search space {space.name!r}: {method.__name__} must take {sorted(core)}, "
                             f"lacks {missing_core}")
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        named = {n for n, p in params.items() if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                            inspect.Parameter.KEYWORD_ONLY)} - core
        undeclared, absent = sorted(named - declared), sorted(declared - named) if not takes_any else []
        if undeclared or absent:
            raise ValueError(f"search space {space.name!r}: {attr} must name {method.__name__}'s arguments "
                             f"beyond {sorted(core)}: undeclared {undeclared}, not taken {absent}")


def register_space(space: SearchSpace) -> SearchSpace:
    """Registers a space instance under ``space.name`` (duplicates are refused).

    Raises:
        ValueError: if the space does not declare the traits of exactly its ops, or its
            builders' arguments (``check_arguments``).
    """
    check_declared(f"search space {space.name!r}", space.op_names, space.op_traits())
    check_arguments(space)
    return SEARCH_SPACES.register(space.name, space)


def get_space(name: str) -> SearchSpace:
    """The registered space called ``name``, or the user's space ``module:attribute`` names
    (``nas.spaces.loader``); ``UserError`` naming the choices if unknown."""
    from .loader import is_module_spec, load_space  # the loader builds on this module

    if is_module_spec(name) and name not in SEARCH_SPACES:
        return load_space(name)
    return SEARCH_SPACES.get(name)
