"""Cost of an architecture: parameter, FLOP and latency tables, the expected cost and its penalty."""
from .objective import CostConfig, CostObjective, CostTables, cost_tables, expected_cost

__all__ = ["CostConfig", "CostObjective", "CostTables", "cost_tables", "expected_cost"]
