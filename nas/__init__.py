"""Differentiable architecture search with Gumbel-softmax choice layers (GDAS, SNAS, DARTS).

The package is arranged by concern, each layer importing only the ones before it:
``utils`` -> ``sampling`` -> ``layers`` -> ``spaces`` -> (``search_spaces``) -> ``cost`` -> ``data`` ->
``config`` -> ``engine`` -> ``report`` -> ``cli`` -> ``experiment``. See docs/architecture.md.
"""
from ._compat import install as _install_moved_module_paths

_install_moved_module_paths()  # old flat module paths (nas.gumbel, nas.search, ...) keep working for one release

from .sampling.architecture import MODES, Architecture, ArchSample
from .layers.choice import ChoiceLayer
from .layers.layer_choice import LayerChoice
from .layers.op_traits import OpTraits
from .utils.errors import UserError
from .sampling.gumbel import gumbel_softmax, sample_gumbel, tau_at
from .spaces.space import SearchSpace, get_space, register_space
from .spaces.module_space import ModuleSpace
from .layers.supernet import Supernet

__all__ = ["MODES", "Architecture", "ArchSample", "ChoiceLayer", "LayerChoice", "ModuleSpace", "OpTraits", "UserError",
           "gumbel_softmax", "sample_gumbel", "tau_at", "SearchSpace", "get_space", "register_space", "Supernet"]
__version__ = "0.2.0"


def __getattr__(name: str):
    # nas.run_search / nas.run_retrain (nas/cli/api.py) load the engine and data layers only when first used.
    if name in ("run_search", "run_retrain"):
        from .cli import api
        return getattr(api, name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")

