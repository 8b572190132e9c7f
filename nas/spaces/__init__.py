"""The search-space interface: ``SearchSpace``, its registry, genotype files and derivation rules.

The built-in spaces themselves live in the top-level ``search_spaces`` package.
"""
from .registry import Registry, SEARCH_SPACES
from .space import SearchSpace, get_space, register_space
from .genotype import GENOTYPE, load_genotype, save_genotype
from .derive import derive_exclusions, derive_with_caps
from .module_space import ModuleSpace

__all__ = ["derive_exclusions", "Registry", "SEARCH_SPACES", "SearchSpace", "get_space", "register_space", "GENOTYPE",
           "load_genotype", "save_genotype", "derive_with_caps", "ModuleSpace"]
