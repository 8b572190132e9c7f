"""Differentiable architecture search with Gumbel-softmax choice layers (GDAS, SNAS, DARTS)."""
from .architecture import MODES, Architecture, ArchSample
from .choice import ChoiceLayer
from .errors import UserError
from .gumbel import gumbel_softmax, sample_gumbel, tau_at
from .space import SearchSpace, get_space, register_space
from .supernet import Supernet

__all__ = ["MODES", "Architecture", "ArchSample", "ChoiceLayer", "UserError", "gumbel_softmax",
           "sample_gumbel", "tau_at", "SearchSpace", "get_space", "register_space", "Supernet"]
__version__ = "0.1.0"
