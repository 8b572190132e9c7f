"""Building blocks of a supernet: candidate ops, the exact straight-through gates, the choice layer, the supernet base."""
from .gates import GATE_RULES, StraightThroughBatchNorm2d
from .choice import ChoiceLayer
from .layer_choice import LayerChoice
from .op_traits import OpTraits
from .supernet import Supernet

__all__ = ["GATE_RULES", "StraightThroughBatchNorm2d", "ChoiceLayer", "LayerChoice", "OpTraits", "Supernet"]
