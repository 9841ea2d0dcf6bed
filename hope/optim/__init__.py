"""Deep optimizers (paper section 4): momentum as an associative memory, DMGD, Muon, M3, MultiFrequency.

All are ``torch.optim.Optimizer`` s usable with any model; see docs/optimizers.md.
"""

from .assoc_momentum import AssocMomentum
from .dmgd import DMGD
from .factory import ADAMW_RECIPE, NAMES, build_optimizer
from .groups import param_groups
from .m3 import M3
from .multi_frequency import MultiFrequency
from .muon import Muon
from .newton_schulz import newton_schulz, newton_schulz_many

__all__ = [
    "ADAMW_RECIPE",
    "AssocMomentum",
    "DMGD",
    "M3",
    "Muon",
    "MultiFrequency",
    "NAMES",
    "build_optimizer",
    "newton_schulz",
    "newton_schulz_many",
    "param_groups",
]
