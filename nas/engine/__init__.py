"""Running epochs: the search and retraining loops, checkpoints and resume, distributed plumbing."""
from .loop import CHECKPOINT, METRICS, EpochLoop, RunDiverged, RunInterrupted, RunWriteFailed
from .search import Searcher
from .train import FINAL, FinalTrainer

__all__ = ["CHECKPOINT", "METRICS", "EpochLoop", "RunDiverged", "RunInterrupted", "RunWriteFailed", "Searcher", "FINAL", "FinalTrainer"]
