"""The outer optimizer and its schedule: AdamW by default (paper recipe), any ``hope.optim`` name otherwise.

Weight decay applies to matrices only. The learning rate follows a linear warmup then a cosine decay to
``lr * min_lr_ratio``; it is a pure function of the step, so the schedule's state is the step number.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hope.training.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``cfg.optimizer`` for ``model``'s parameters (works on FSDP2-sharded modules too)."""
    kwargs = dict(cfg.optimizer_kwargs)
    name = cfg.optimizer.lower().replace("-", "_")
    if name in ("adamw", "sgd"):
        kwargs = {"betas": cfg.betas, "eps": cfg.eps, **kwargs} if name == "adamw" else kwargs
    try:
        from hope.optim import build_optimizer as hope_build_optimizer
    except ImportError:
        hope_build_optimizer = None
    if hope_build_optimizer is not None:
        opt = hope_build_optimizer(name, model, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)
    elif name == "adamw":
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
        other = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=cfg.lr, **kwargs)
    else:
        raise ValueError(f"optimizer {cfg.optimizer!r} needs hope.optim, which cannot be imported here; "
                         "use optimizer=adamw")
    for group in opt.param_groups:
        group["base_lr"] = group["lr"]
    return opt


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based): linear warmup, then cosine."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, step: int, cfg: TrainConfig) -> float:
    """Set every group's lr for ``step`` (groups keep their own peak in ``base_lr``); returns the factor."""
    factor = lr_factor(step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = group.get("base_lr", cfg.lr) * factor
        if group.get("adamw_lr") is not None:  # hope.optim hybrids keep a separate AdamW peak
            group.setdefault("base_adamw_lr", group["adamw_lr"])
            group["adamw_lr"] = group["base_adamw_lr"] * factor
    return factor
