"""What a run says about itself: the report's figures and tables, TensorBoard logging.

``python -m nas.report RUN_DIR`` writes ``RUN_DIR/report/``.
"""
from .report import DerivationMarks, SearchRun, VizDependencyMissing, convergence, derivation_marks, load_run, main, op_colors, try_write_report, write_report

__all__ = ["DerivationMarks", "SearchRun", "VizDependencyMissing", "convergence", "derivation_marks", "load_run", "main", "op_colors", "try_write_report", "write_report"]
