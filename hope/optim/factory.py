"""``build_optimizer(name, model_or_params, **kwargs)``: pick an optimizer by name (for train.py configs)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .assoc_momentum import AssocMomentum
from .dmgd import DMGD
from .groups import param_groups
from .m3 import M3
from .muon import Muon

# The outer-loop recipe of the paper (section 5.1): AdamW, betas (0.9, 0.95), weight decay 0.1.
ADAMW_RECIPE: dict[str, Any] = {"lr": 4e-4, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}
NAMES = ("adamw", "muon", "m3", "assoc_momentum", "dmgd", "sgd")
_HYBRID = ("muon", "m3")  # optimizers that send embeddings / non-matrices to their AdamW fallback


def build_optimizer(name: str, model_or_params: nn.Module | Iterable, **kwargs: Any) -> torch.optim.Optimizer:
    """Build optimizer ``name`` (one of ``NAMES``) for a model or for params / param groups.

    For an ``nn.Module`` the groups come from ``param_groups(model, weight_decay)`` (decay on matrices
    only); ``decay_embeddings`` and ``adamw_names`` are forwarded to it. For Muon and M3 embeddings,
    the output head and non-matrices use AdamW; the other optimizers step every group themselves.
    Remaining ``kwargs`` go to the optimizer's constructor. ``adamw`` defaults to ``ADAMW_RECIPE``.
    """
    key = name.lower().replace("-", "_")
    if key not in NAMES:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {NAMES}")
    if key == "adamw":
        kwargs = {**ADAMW_RECIPE, **kwargs}
    if isinstance(model_or_params, nn.Module):
        wd = kwargs.pop("weight_decay", 0.0)
        group_kw = {k: kwargs.pop(k) for k in ("decay_embeddings", "adamw_names") if k in kwargs}
        params: Any = param_groups(model_or_params, wd, **group_kw)
        for group in params:
            group.pop("names")
            if key not in _HYBRID:
                group.pop("adamw")
    else:
        params = model_or_params
    if key == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    if key == "sgd":
        return torch.optim.SGD(params, **kwargs)
    if key == "muon":
        return Muon(params, **kwargs)
    if key == "m3":
        return M3(params, **kwargs)
    if key == "assoc_momentum":
        return AssocMomentum(params, **kwargs)
    return DMGD(params, **kwargs)
