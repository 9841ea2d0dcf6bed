"""Continual-learning methods, one per file, each with its paper cited; ``METHODS`` maps names to classes."""

from hope.continual.methods.adapters import Adapters
from hope.continual.methods.agem import AGEM
from hope.continual.methods.das import DAS
from hope.continual.methods.ewc import EWC
from hope.continual.methods.joint import Joint
from hope.continual.methods.lwf import LwF
from hope.continual.methods.naive import Naive
from hope.continual.methods.replay import Replay
from hope.continual.methods.spg import SPG

METHODS = {cls.name: cls for cls in (Naive, Joint, Replay, AGEM, EWC, LwF, SPG, DAS, Adapters)}

__all__ = ["AGEM", "DAS", "EWC", "METHODS", "Adapters", "Joint", "LwF", "Naive", "Replay", "SPG"]
