"""The command-line layer: run directories and their lock, signals, the error guard, and the factory
that turns a config into a searcher or a retraining (the config-to-arguments translation lives there only)."""
from .build import build_final_trainer, build_searcher
from .run_command import (CONFIG, LOCK, guarded_main, lock_run_dir, open_run_dir, report_stop, resolve_run,
                          run_parser, stop_signals)

__all__ = ["build_final_trainer", "build_searcher", "CONFIG", "LOCK", "guarded_main", "lock_run_dir", "open_run_dir",
           "report_stop", "resolve_run", "run_parser", "stop_signals"]
