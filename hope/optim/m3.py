"""M3: Multi-scale Momentum Muon (arXiv section 7.2, Algorithm 1): "Adam + Muon + CMS" on the gradient stream.

For a matrix parameter, with f = ``slow_every``:

    fast (every step):  M1 <- acc(M1, g; beta1),  V <- acc(V, g^2; beta2),  O1 = NS(M1)
    slow (every f steps, after the step): M2 <- acc(M2, chunk of the last f gradients; beta3),  O2 = NS(M2)
    update:             theta <- theta - lr * (O1 + alpha * O2) / (sqrt(V) + eps)

A step uses the O2 of the chunks completed before it (Algorithm 1's slow loop runs before its fast loop).

``accumulation="ema"`` (default): M1 <- beta1 M1 + (1 - beta1) g, V <- beta2 V + (1 - beta2) g^2
(bias-corrected), M2 <- beta3 M2 + (1 - beta3) mean(chunk).
``accumulation="sum"``: Algorithm 1 as printed, M1 <- M1 + beta1 g,
V <- V + beta2 g^2, M2 <- M2 + beta3 sum(chunk): nothing is ever forgotten, and sqrt(V) grows like sqrt(t),
an implicit 1/sqrt(t) step decay on top of the learning-rate schedule. See docs/optimizers.md.

``precondition="before"`` (default) orthogonalizes M / (sqrt(V) + eps), which is invariant to the gradient
scale like Adam and Muon. ``precondition="after"`` is Algorithm 1 as printed: it divides the orthogonalized
momenta elementwise by sqrt(V), so the update scales like 1 / |g| (NS outputs have unit singular values,
sqrt(V) has the gradient's scale). Failure mode: a parameter whose gradients are tiny takes a huge step (on
tiny HOPE one step at lr 1e-3 moved a CMS key-projection entry to 2.3e4, and the loss was NaN within 5 steps
at lr 1e-3, 3e-4 and 1e-4), so the printed form needs a learning rate tuned per parameter to its gradient scale.
``scale="match_adamw"`` (default, as in :class:`~hope.optim.Muon`) gives the matrix updates an AdamW-like RMS,
so one learning rate serves them and the AdamW fallback.

``alpha=0`` or ``slow_every=None`` turns the slow branch off (no M2 state). Parameters with fewer than two
dimensions, and groups flagged ``adamw=True``, are stepped by AdamW. State per matrix: M1, V and, with the
slow branch, M2, O2 and the chunk sum (5 copies of the parameter).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .common import (
    ADAMW_DEFAULTS,
    adamw_step,
    check_choice,
    check_grad,
    check_range,
    decay_weights,
    full_tensor,
    matrix_view,
    ns_scale,
    shard_like,
    uses_adamw,
)
from .newton_schulz import METHODS, newton_schulz_many


def _orthogonalize(items: list[tuple[Tensor, Tensor, dict]], name: str) -> list[Tensor]:
    """NS of each (param, matrix-like tensor, group), batched per (ns_steps, ns_method); shards like param."""
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, (_, _, group) in enumerate(items):
        buckets[(group["ns_steps"], group["ns_method"])].append(i)
    out: list[Tensor | None] = [None] * len(items)
    for (steps, method), idx in buckets.items():
        mats = [matrix_view(full_tensor(items[i][1], items[i][2], name, "Newton-Schulz")) for i in idx]
        for i, o in zip(idx, newton_schulz_many(mats, steps=steps, method=method)):
            p = items[i][0]
            out[i] = shard_like(o.reshape(p.shape), p)
    return out  # type: ignore[return-value]


class M3(Optimizer):
    """Multi-scale momentum Muon (Algorithm 1) with an AdamW fallback for non-matrix parameters.

    Args:
        lr: step size. betas: (beta1 fast momentum, beta2 second moment, beta3 slow momentum).
        alpha: weight of the slow branch. slow_every: f, steps per slow update (None: no slow branch).
        accumulation: ``"ema"`` or ``"sum"``. precondition: ``"after"`` or ``"before"`` Newton-Schulz.
        weight_decay: decoupled. scale: NS output scale (``common.ns_scale``).
        dtensor: ``"gather"`` or ``"error"`` for FSDP2-sharded matrices.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float, float] = (0.9, 0.999, 0.9), *,
                 alpha: float = 1.0, slow_every: int | None = 10, eps: float = 1e-8,
                 weight_decay: float = 0.0, accumulation: str = "ema", precondition: str = "before",
                 ns_steps: int = 5, ns_method: str = "quintic", scale: str = "match_adamw", dtensor: str = "gather",
                 **adamw: Any) -> None:
        unknown = set(adamw) - set(ADAMW_DEFAULTS)
        if unknown:
            raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
        defaults = dict(lr=lr, betas=tuple(betas), alpha=alpha, slow_every=slow_every, eps=eps,
                        weight_decay=weight_decay, accumulation=accumulation, precondition=precondition,
                        ns_steps=ns_steps, ns_method=ns_method, scale=scale, dtensor=dtensor,
                        **{**ADAMW_DEFAULTS, **adamw})
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        check_range("lr", group["lr"], 0.0, float("inf"))
        if len(group["betas"]) != 3:
            raise ValueError(f"betas must be (beta1, beta2, beta3), got {group['betas']!r}")
        for name, b in zip(("beta1", "beta2", "beta3"), group["betas"]):
            check_range(name, b, 0.0, 1.0, hi_open=group["accumulation"] == "ema")
        f = group["slow_every"]
        if f is not None and (not isinstance(f, int) or f < 1):
            raise ValueError(f"slow_every must be a positive int or None, got {f!r}")
        check_range("weight_decay", group["weight_decay"], 0.0, float("inf"))
        check_choice("accumulation", group["accumulation"], ("ema", "sum"))
        check_choice("precondition", group["precondition"], ("after", "before"))
        check_choice("ns_method", group["ns_method"], METHODS)
        check_choice("dtensor", group["dtensor"], ("gather", "error"))
        ns_scale((1, 1), group["scale"])

    @staticmethod
    def _slow_on(group: dict[str, Any]) -> bool:
        return group["slow_every"] is not None and group["alpha"] != 0

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        fast: list[tuple[Tensor, Tensor, dict]] = []
        denoms: list[Tensor] = []
        for group in self.param_groups:
            b1, b2, _ = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                check_grad(p, g, "M3")
                state = self.state[p]
                if uses_adamw(p, group, True, "M3"):
                    adamw_step(p, g, state, group)
                    continue
                if "m1" not in state:
                    state["step"] = 0
                    state["m1"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if self._slow_on(group):
                        for key in ("m2", "o2", "chunk"):
                            state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                m1, v = state["m1"], state["v"]
                if group["accumulation"] == "ema":
                    m1.lerp_(g, 1.0 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
                    denom = (v / (1.0 - b2 ** state["step"])).sqrt_().add_(group["eps"])
                else:
                    m1.add_(g, alpha=b1)
                    v.addcmul_(g, g, value=b2)
                    denom = v.sqrt().add_(group["eps"])
                if self._slow_on(group):
                    state["chunk"].add_(g)
                numer = m1 / denom if group["precondition"] == "before" else m1
                fast.append((p, numer, group))
                denoms.append(denom)

        slow: list[tuple[Tensor, Tensor, dict]] = []
        for (p, _, group), o1, denom in zip(fast, _orthogonalize(fast, "M3"), denoms):
            state = self.state[p]
            upd = o1
            if self._slow_on(group):
                upd = upd.add(state["o2"], alpha=group["alpha"])
            if group["precondition"] == "after":
                upd = upd / denom
            decay_weights(p, group["lr"], group["weight_decay"])
            p.add_(upd, alpha=-group["lr"] * ns_scale(p.shape, group["scale"]))
            if self._slow_on(group) and state["step"] % group["slow_every"] == 0:
                m2, chunk = state["m2"], state["chunk"]
                b3 = group["betas"][2]
                if group["accumulation"] == "ema":
                    m2.mul_(b3).add_(chunk, alpha=(1.0 - b3) / group["slow_every"])
                else:
                    m2.add_(chunk, alpha=b3)
                chunk.zero_()
                slow.append((p, m2 / denom if group["precondition"] == "before" else m2, group))
        for (p, _, _), o2 in zip(slow, _orthogonalize(slow, "M3")):
            self.state[p]["o2"].copy_(o2)
        return loss
