"""Parameter groups for the paper's recipe: weight decay on matrices only, AdamW for non-matrices.

``param_groups(model, weight_decay)`` sorts a model's trainable parameters into at most three groups:

* hidden matrices (>= 2-D, not embeddings, not in ``adamw_names``): ``weight_decay``, ``adamw=None``
  (Muon/M3 orthogonalize them);
* embeddings (``nn.Embedding`` weights, and parameters whose name contains one of ``adamw_names``, by
  default the untied ``lm_head``): ``adamw=True``; weight decay only when ``decay_embeddings=True``
  (an output head that is not an embedding is a matrix and keeps ``weight_decay``);
* everything with fewer than 2 dimensions (norm gains, biases, learnable step sizes and gates):
  no weight decay, ``adamw=True``.

Embeddings get no decay by default: a row of the table receives gradient only when its token occurs,
while decoupled decay shrinks every row every step, so rare tokens' embeddings decay toward zero
regardless of what was learned for them (and a tied output head would be decayed through the
embedding). The extra ``adamw`` key is read by Muon, M3, AssocMomentum and DMGD and ignored by torch's
own optimizers, so the same groups work for every name in ``build_optimizer``.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def param_groups(model: nn.Module, weight_decay: float, *, decay_embeddings: bool = False,
                 adamw_names: tuple[str, ...] = ("lm_head",)) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters (shared ones once) into decay / no-decay / AdamW groups."""
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    seen: set[int] = set()
    buckets: dict[str, dict[str, Any]] = {
        "matrix": {"params": [], "names": [], "weight_decay": weight_decay, "adamw": None},
        "embedding_decay": {"params": [], "names": [], "weight_decay": weight_decay, "adamw": True},
        "embedding": {"params": [], "names": [], "weight_decay": 0.0, "adamw": True},
        "no_decay": {"params": [], "names": [], "weight_decay": 0.0, "adamw": True},
    }
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if p.ndim < 2:
            key = "no_decay"
        elif id(p) in embedding_ids:
            key = "embedding_decay" if decay_embeddings else "embedding"
        elif any(s in name for s in adamw_names):
            key = "embedding_decay"
        else:
            key = "matrix"
        buckets[key]["params"].append(p)
        buckets[key]["names"].append(name)
    return [g for g in buckets.values() if g["params"]]
