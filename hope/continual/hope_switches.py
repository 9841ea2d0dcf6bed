"""HOPE's own continual-learning mechanisms as switches on a :class:`hope.HopeLM` (paper sections 7-8).

* :func:`frozen_in_context`: evaluation without in-context adaptation (no CMS level or Titans memory update).
* :func:`write_back_cms`: CMS fast weights persist across context resets (the next sequence starts from the
  batch-mean fast weights the last one ended with) instead of resetting to the meta-learned weights.
* :func:`cms_param_groups`: CMS levels stepped at their own frequencies on the optimizer axis, for
  :class:`hope.optim.MultiFrequency` (paper Eq. 70-71).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from hope.cms import CMSLevel
from hope.titans import SelfModifyingTitans

_SAT = 30.0  # sigmoid(30) == 1.0 and sigmoid(-30) < 1e-13 in fp32


def adaptive_levels(model: nn.Module) -> list[CMSLevel]:
    return [m for m in model.modules() if isinstance(m, CMSLevel) and m.chunk_size is not None]


@contextlib.contextmanager
def frozen_in_context(model: nn.Module) -> Iterator[None]:
    """Inside the block, every in-context CMS level has ``eta = 0`` and every Titans memory has learning rate
    0 and retention 1, so no fast state changes; parameters are restored exactly on exit."""
    saved = [(lvl, lvl.eta.detach().clone()) for lvl in adaptive_levels(model)]
    hooks = []

    def freeze_gates(mod: SelfModifyingTitans, _inp, out: torch.Tensor) -> torch.Tensor:
        h = mod.n_heads
        out = out.clone()
        out[..., :h] = -_SAT       # eta -> 0
        out[..., h : 2 * h] = _SAT  # alpha -> 1
        return out

    for mod in model.modules():
        if isinstance(mod, SelfModifyingTitans):
            hooks.append(mod.gates.register_forward_hook(lambda m, i, o, mod=mod: freeze_gates(mod, i, o)))
    try:
        with torch.no_grad():
            for lvl, _ in saved:
                lvl.eta.zero_()
        yield
    finally:
        for hk in hooks:
            hk.remove()
        with torch.no_grad():
            for lvl, eta in saved:
                lvl.eta.copy_(eta)


@torch.no_grad()
def write_back_cms(model: nn.Module, state: list) -> int:
    """Copy the batch-mean end-of-sequence fast weights of every in-context CMS level (from a HopeLM output
    ``state``) into that level's start weights. Returns how many levels were written."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(state) != len(blocks):
        raise ValueError("write_back_cms needs a HopeLM and the state its forward returned")
    n = 0
    for block, (_, cms_state) in zip(blocks, state):
        for lvl, s in zip(block.cms.levels, cms_state):
            if s is None:
                continue
            w_in = s.w_in.float().mean(0) if s.w_in.dim() == 3 else s.w_in
            w_out = s.w_out.float().mean(0) if s.w_out.dim() == 3 else s.w_out
            f = lvl.hidden
            lvl.w_gate.copy_(w_in[:f])
            lvl.w_up.copy_(w_in[f:])
            lvl.w_down.copy_(w_out)
            n += 1
    return n


def cms_param_groups(model: nn.Module, static_every: int | None = None) -> list[dict]:
    """Parameter groups with ``every``: a CMS level with chunk size C steps every C / C_min optimizer calls,
    a static level every ``static_every`` (default: twice the slowest in-context level's period), everything
    else every call."""
    levels = [m for m in model.modules() if isinstance(m, CMSLevel)]
    chunks = [lvl.chunk_size for lvl in levels if lvl.chunk_size is not None]
    if not levels:
        raise ValueError("cms_param_groups: the model has no CMS levels")
    c_min = min(chunks) if chunks else 1
    slowest = max(chunks) // c_min if chunks else 1
    static_every = static_every if static_every is not None else 2 * slowest
    seen, groups = set(), {}
    for lvl in levels:
        every = static_every if lvl.chunk_size is None else max(1, lvl.chunk_size // c_min)
        for p in lvl.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                groups.setdefault(every, []).append(p)
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    out = [{"params": rest, "every": 1}] if rest else []
    return out + [{"params": ps, "every": k} for k, ps in sorted(groups.items())]
