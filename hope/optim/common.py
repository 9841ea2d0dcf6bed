"""Pieces shared by the optimizers in :mod:`hope.optim`.

* matrix views: how a parameter of any rank is seen as a matrix (and oriented so the short side
  comes first, as Newton-Schulz and the Gram-based memories need);
* the AdamW fallback used by Muon, M3 and (on request) every other optimizer here for embeddings,
  norms, biases and anything flagged ``adamw=True`` in its parameter group;
* DTensor (FSDP2) helpers: gather a sharded tensor to the full matrix and shard a full result back;
* option checks that raise ``ValueError`` naming the option and the parameter shape.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

try:  # torch >= 2.4 exposes DTensor publicly
    from torch.distributed.tensor import DTensor, Replicate
except ImportError:  # pragma: no cover - very old torch or no distributed build
    DTensor = None  # type: ignore[assignment,misc]
    Replicate = None  # type: ignore[assignment,misc]

ADAMW_DEFAULTS: dict[str, Any] = {
    "adamw": None,  # None: automatic (see ``uses_adamw``), True/False: forced per group
    "adamw_lr": None,  # None: the group's lr
    "adamw_betas": (0.9, 0.95),
    "adamw_eps": 1e-8,
    "adamw_weight_decay": None,  # None: the group's weight_decay
}


# ----------------------------------------------------------------------------- matrix views
def matrix_view(t: Tensor) -> Tensor:
    """View ``t`` as a matrix: 0-D -> (1, 1), 1-D (n,) -> (1, n), 2-D as is, k-D -> (shape[0], -1)."""
    if t.ndim == 0:
        return t.reshape(1, 1)
    if t.ndim == 1:
        return t.reshape(1, -1)
    if t.ndim == 2:
        return t
    return t.reshape(t.shape[0], -1)


def oriented(m: Tensor) -> Tensor:
    """Transpose a (..., r, c) matrix when r > c, so rows are the shorter side (a <= b)."""
    return m.mT if m.shape[-2] > m.shape[-1] else m


def matrix_shape(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """Rows and columns of ``matrix_view`` for a tensor of ``shape``."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, int(shape[0])
    return int(shape[0]), int(math.prod(shape[1:]))


def ns_scale(shape: torch.Size | tuple[int, ...], mode: str) -> float:
    """Scale applied to an orthogonalized update of a parameter of ``shape``.

    ``none``: 1. ``shape``: sqrt(max(1, rows/cols)) (Muon's original rule).
    ``match_adamw``: 0.2 * sqrt(max(rows, cols)), which gives the update the RMS of a typical AdamW
    update, so one learning rate serves both the matrices and the AdamW fallback.
    """
    r, c = matrix_shape(shape)
    if mode == "none":
        return 1.0
    if mode == "shape":
        return math.sqrt(max(1.0, r / c))
    if mode == "match_adamw":
        return 0.2 * math.sqrt(max(r, c))
    raise ValueError(f"scale must be 'none', 'shape' or 'match_adamw', got {mode!r}")


# ----------------------------------------------------------------------------- checks
def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not (isinstance(value, str) and value in choices):
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_range(name: str, value: float, lo: float, hi: float, *, hi_open: bool = False) -> None:
    ok = lo <= value < hi if hi_open else lo <= value <= hi
    if not ok:
        bracket = ")" if hi_open else "]"
        raise ValueError(f"{name} must be in [{lo}, {hi}{bracket}, got {value}")


def check_grad(p: Tensor, g: Tensor, optimizer: str) -> None:
    if g.is_sparse:
        raise ValueError(f"{optimizer} does not support sparse gradients (parameter shape {tuple(p.shape)})")
    if torch.is_complex(p):
        raise ValueError(f"{optimizer} does not support complex parameters (shape {tuple(p.shape)})")


def uses_adamw(p: Tensor, group: dict[str, Any], matrix_only: bool, optimizer: str) -> bool:
    """Whether ``p`` is stepped by the AdamW fallback.

    ``group['adamw']`` True/False forces the choice; None means automatic: AdamW for parameters with
    fewer than two dimensions when the optimizer's update needs a matrix (``matrix_only``).
    Forcing a 0-D/1-D parameter off AdamW in a matrix-only optimizer is an error.
    """
    flag = group.get("adamw")
    if flag is None:
        return matrix_only and p.ndim < 2
    if not flag and matrix_only and p.ndim < 2:
        raise ValueError(
            f"{optimizer}: parameter of shape {tuple(p.shape)} has fewer than 2 dimensions, so Newton-Schulz "
            "cannot orthogonalize it; leave its group's adamw=None/True to step it with AdamW"
        )
    return bool(flag)


# ----------------------------------------------------------------------------- AdamW fallback
def adamw_step(p: Tensor, g: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
    """One AdamW step (Loshchilov & Hutter; the same formula as ``torch.optim.AdamW``) on ``p``."""
    lr = group["adamw_lr"] if group.get("adamw_lr") is not None else group["lr"]
    wd = group["adamw_weight_decay"] if group.get("adamw_weight_decay") is not None else group["weight_decay"]
    beta1, beta2 = group["adamw_betas"]
    if "adam_exp_avg" not in state:
        state["adam_step"] = 0
        state["adam_exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["adam_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    state["adam_step"] += 1
    t = state["adam_step"]
    m, v = state["adam_exp_avg"], state["adam_exp_avg_sq"]
    if wd != 0:
        p.mul_(1.0 - lr * wd)
    m.lerp_(g, 1.0 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
    bc1 = 1.0 - beta1**t
    bc2 = 1.0 - beta2**t
    denom = (v.sqrt() / math.sqrt(bc2)).add_(group["adamw_eps"])
    p.addcdiv_(m, denom, value=-lr / bc1)


# ----------------------------------------------------------------------------- DTensor (FSDP2)
def is_dtensor(t: Tensor) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def full_tensor(t: Tensor, group: dict[str, Any], optimizer: str, why: str) -> Tensor:
    """The full (unsharded) value of ``t``; plain tensors are returned unchanged.

    A DTensor is all-gathered when ``group['dtensor'] == 'gather'`` and rejected with a ValueError when
    it is ``'error'``. Every rank then computes the same full-matrix result redundantly.
    """
    if not is_dtensor(t):
        return t
    if group.get("dtensor", "gather") != "gather":
        raise ValueError(
            f"{optimizer}: parameter of shape {tuple(t.shape)} is a DTensor with placements {t.placements}; "
            f"{why} needs the full matrix. Pass dtensor='gather' (all-gather every step) or keep this "
            "parameter unsharded"
        )
    return t.full_tensor()


def shard_like(full: Tensor, ref: Tensor) -> Tensor:
    """Distribute a full tensor the way ``ref`` is distributed (no-op for plain ``ref``).

    The full value is identical on every rank, so Replicate -> ref.placements is a local slice.
    """
    if not is_dtensor(ref):
        return full
    rep = DTensor.from_local(full, ref.device_mesh, [Replicate()] * ref.device_mesh.ndim, run_check=False)
    return rep.redistribute(ref.device_mesh, ref.placements)


def decay_weights(p: Tensor, lr: float, weight_decay: float) -> None:
    """Decoupled weight decay p <- p (1 - lr * wd), applied before the update (as AdamW does)."""
    if weight_decay != 0:
        p.mul_(1.0 - lr * weight_decay)
