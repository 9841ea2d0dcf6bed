"""Muon: a linear momentum memory with the dot objective and a Newton-Schulz output (paper Eq. 24).

``Muon`` is ``AssocMomentum(objective="dot", output="newton_schulz", nesterov=True)`` with Muon's usual
defaults, plus the AdamW fallback for every parameter with fewer than two dimensions (norm gains, biases)
and every group flagged ``adamw=True`` (embeddings, output head; see ``hope.optim.param_groups``).
k-D parameters (k > 2, e.g. convolutions) are orthogonalized as (shape[0], prod(rest)) matrices.

With ``scale="match_adamw"`` (default) an orthogonalized update has about the RMS of an AdamW update, so
one ``lr`` serves the matrices and the AdamW fallback; ``scale="shape"`` with lr ~ 0.02 is the original
Muon recipe (then give the AdamW groups ``adamw_lr``).
"""

from __future__ import annotations

from typing import Any

from .assoc_momentum import AssocMomentum


class Muon(AssocMomentum):
    """Momentum + Newton-Schulz orthogonalization for matrices, AdamW for the rest."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.95, *, nesterov: bool = True,
                 mem_lr: float = 1.0, weight_decay: float = 0.0, ns_steps: int = 5,
                 ns_method: str = "quintic", scale: str = "match_adamw", dtensor: str = "gather",
                 **adamw: Any) -> None:
        super().__init__(params, lr=lr, momentum=momentum, objective="dot", mem_lr=mem_lr, nesterov=nesterov,
                         output="newton_schulz", weight_decay=weight_decay, ns_steps=ns_steps,
                         ns_method=ns_method, scale=scale, dtensor=dtensor, **adamw)
