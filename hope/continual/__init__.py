"""Continual learning: benchmark -> stream of experiences -> learner, measured by an accuracy matrix.

``Protocol(stream).run(learner)`` owns the loop and the test data; metrics are pure functions of the matrix.
No file or network I/O here: the data loaders and the command line are in ``eval/continual.py``.
"""

from hope.continual.learner import Learner
from hope.continual.methods import METHODS
from hope.continual.metrics import METRIC_NAMES, all_metrics
from hope.continual.protocol import EvaluationChangedState, Protocol, RunResult
from hope.continual.stream import Example, Experience, ExperienceView, ProtocolViolation, Stream
from hope.continual.synthetic import cipher_stream

__all__ = ["METHODS", "METRIC_NAMES", "EvaluationChangedState", "Example", "Experience", "ExperienceView",
           "Learner", "Protocol", "ProtocolViolation", "RunResult", "Stream", "all_metrics", "cipher_stream"]
