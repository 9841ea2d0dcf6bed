"""HOPE / Nested Learning: self-modifying Titans, the Continuum Memory System and the HOPE language model."""

from hope.cms import CMSLevel, ContinuumMemorySystem
from hope.config import PRESETS, HopeConfig
from hope.model import HopeBlock, HopeLM, HopeOutput
from hope.titans import SelfModifyingTitans, Titans

__all__ = [
    "PRESETS",
    "CMSLevel",
    "ContinuumMemorySystem",
    "HopeBlock",
    "HopeConfig",
    "HopeLM",
    "HopeOutput",
    "SelfModifyingTitans",
    "Titans",
]
__version__ = "0.1.0"
