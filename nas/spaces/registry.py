"""The registry of search spaces: spaces register themselves here by name.

The library looks a space up by name and never imports a particular space.
``Registry`` itself lives in ``nas.utils.registry`` (the sampling layer has one too).
"""
from __future__ import annotations

from ..utils.registry import Registry

__all__ = ["Registry", "SEARCH_SPACES"]

SEARCH_SPACES = Registry("search space")
