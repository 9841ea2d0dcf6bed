"""Training helpers used by ``train.py``: config, data, tokenizer, checkpoint, parallel, logging, evaluation.

``hope.training.checkpoint.load_model(path)`` loads a trained checkpoint back into ``(HopeConfig, HopeLM)``.
"""

from hope.training.checkpoint import CheckpointError, load_model
from hope.training.config import TrainConfig

__all__ = ["CheckpointError", "TrainConfig", "load_model"]
