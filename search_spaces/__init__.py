"""Search spaces, one module each, registered by name on import.

>>> import search_spaces
>>> space = search_spaces.get("nb201")
>>> supernet = space.build_supernet(mode="gdas", num_classes=10, C=16, N=5)
"""
from nas.spaces.registry import SEARCH_SPACES
from nas.spaces.space import SearchSpace, get_space as get

from . import nb201  # noqa: F401  (registers "nb201")
from . import darts  # noqa: F401  (registers "darts")
from . import mobilenet  # noqa: F401  (registers "mobilenet")
from . import timm_models  # noqa: F401  (registers the timm entry points)


def names() -> list[str]:
    """Names of the registered search spaces."""
    return SEARCH_SPACES.names()


__all__ = ["get", "names", "SearchSpace"]
