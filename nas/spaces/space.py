"""The interface every search space implements, and the lookup by name."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .registry import SEARCH_SPACES
from ..layers.supernet import Supernet


class SearchSpace:
    """A search space: its ops, supernet, discrete network and genotype format.

    Subclasses set ``name`` and ``op_names`` and implement the methods below;
    an instance is registered with ``register_space``.
    """

    name: str = ""
    op_names: tuple[str, ...] = ()
    derivation_rules: tuple[str, ...] = ("argmax",)  # the first is the default
    published: dict[str, Any] = {}  # name -> genotype of published cells (``--genotype DARTS_V2``)

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
        """cell kind -> ``(from_node, to_node, op)`` edges of the derived cell, ``none`` left out (for diagrams)."""
        raise NotImplementedError

    def genotype_edges(self, genotype: Any) -> list[tuple[str, int, str]]:
        """The ``(group, logit row, op)`` of every edge the genotype keeps (for derivation caps)."""
        raise NotImplementedError

    def random_genotype(self, generator: torch.Generator | None = None) -> Any:
        """A genotype drawn uniformly from the space."""
        raise NotImplementedError


def register_space(space: SearchSpace) -> SearchSpace:
    """Registers a space instance under ``space.name`` (duplicates are refused)."""
    return SEARCH_SPACES.register(space.name, space)


def get_space(name: str) -> SearchSpace:
    """The registered space called ``name``; ``UserError`` naming the choices if unknown."""
    return SEARCH_SPACES.get(name)
