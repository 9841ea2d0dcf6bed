"""Momentum as an associative memory of gradients (paper Eq. 17-24; arXiv Eq. 33-52).

One optimizer, ``AssocMomentum``, whose options name the memory's parts. For a parameter W with
gradient G, key K = phi(G) (``feature_map``) and write term U = c P(K) (``values``: P = I by default;
``value_scale`` c = 1 by default, i.e. the objective's target is c P):

``objective="dot"`` (Eq. 17-20), one GD step on  -<m, U>  with retention alpha and step eta:
    m <- alpha * m + eta * U                      (heavy ball; preconditioned momentum when P != I)
``objective="l2"`` (delta momentum, Eq. 21-22), one GD step on  1/2 ||m K^T - P||_F^2:
    matrix layout:      m <- alpha * m - eta * (m K^T) K + eta * U      (= m (alpha I - eta K^T K) + eta P K)
    elementwise layout: m <- (alpha - eta * K**2) * m + eta * U
The decay depends on the gradient: the memory forgets along the directions it is now being written.

Update:  W <- W - lr * sigma(m)  (or  U + alpha * m  with ``nesterov``), sigma = identity or Newton-Schulz
(``output="newton_schulz"``: with the dot objective this is Muon, Eq. 24).

Sign convention: the paper writes m <- alpha m - eta g and W <- W + m; we keep m positive
(m <- alpha m + eta g, W <- W - lr m), which is torch SGD's buffer: with objective="dot", mem_lr=1
(dampening 0), identity features/values/output, this optimizer equals ``torch.optim.SGD(momentum=alpha)``.

Matrix layout: a parameter is seen as a matrix (1-D (n,) as a (1, n) row, k-D as (shape[0], -1)) and
transposed when it has more rows than columns, so the keys are the rows of the short side and the Gram
matrix K K^T costs min(r, c)^2. ``eta`` must satisfy eta * ||K||_2^2 < 1 + alpha for the l2 decay to be
stable; ``feature_map="normalize"`` (K = G / ||G||_F) makes any eta in (0, 1] safe.
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
    oriented,
    shard_like,
    uses_adamw,
)
from .newton_schulz import METHODS, newton_schulz_many

OBJECTIVES = ("dot", "l2")
LAYOUTS = ("matrix", "elementwise")
FEATURE_MAPS = ("identity", "normalize", "poly")
VALUES = ("identity", "rms")
OUTPUTS = ("identity", "newton_schulz")


def apply_feature_map(g: Tensor, group: dict[str, Any]) -> Tensor:
    """Key K = phi(G) (arXiv Eq. 51): identity, Frobenius-normalize, or elementwise polynomial sum c_i g^i."""
    fmap = group["feature_map"]
    if callable(fmap):
        return fmap(g)
    if fmap == "identity":
        return g
    if fmap == "normalize":
        return g / (torch.linalg.vector_norm(g) + group["eps"])
    out = torch.zeros_like(g)
    power = torch.ones_like(g)
    for c in group["poly_coeffs"]:
        power = power * g
        if c != 0:
            out = out + c * power
    return out


def apply_values(k: Tensor, state: dict[str, Any], group: dict[str, Any]) -> Tensor:
    """Write term U = P(K) (Eq. 19-20). ``rms``: diagonal P = 1 / (sqrt(EMA of K^2) + eps), Adam-like."""
    values = group["values"]
    if callable(values):
        return values(k, state)
    if values == "identity":
        return k
    beta = group["values_beta"]
    if "values_sq" not in state:
        state["values_sq"] = torch.zeros_like(k)
    v = state["values_sq"]
    v.mul_(beta).addcmul_(k, k, value=1.0 - beta)
    bc = 1.0 - beta ** state["step"]
    return k / ((v / bc).sqrt() + group["eps"])


def l2_matrix_update(m: Tensor, k: Tensor, u: Tensor, alpha: float, eta: float) -> Tensor:
    """New m = alpha m - eta (m K^T) K + eta U on oriented matrix views (rows = short side)."""
    mv, kv = oriented(matrix_view(m)), oriented(matrix_view(k))
    uv = oriented(matrix_view(u))
    new = alpha * mv - eta * (mv @ kv.mT) @ kv + eta * uv
    new = new.mT if matrix_view(m).shape[0] > matrix_view(m).shape[1] else new
    return new.reshape(m.shape)


class AssocMomentum(Optimizer):
    """Momentum as an associative memory (dot / l2 objective, feature map, values, Newton-Schulz output).

    Args:
        lr: outer step size. momentum: retention alpha in [0, 1). mem_lr: the memory's own step eta
            (= 1 - dampening in torch SGD terms).
        objective: ``"dot"`` (Eq. 17-20) or ``"l2"`` (delta momentum, Eq. 21-22).
        layout: for ``"l2"``: ``"matrix"`` (keys are rows of the parameter's matrix view) or
            ``"elementwise"`` (a scalar memory per coordinate).
        feature_map: ``"identity"``, ``"normalize"``, ``"poly"`` (coefficients ``poly_coeffs`` of g, g^2, ...)
            or a callable G -> K.
        values: ``"identity"`` (P = I), ``"rms"`` (diagonal Adam-like P) or a callable (K, state) -> U.
        value_scale: c, the target's scale. With the l2 objective and raw keys, mem_lr must be small for a
            stable decay (eta ||K||^2 < 1 + alpha); value_scale = 1 / mem_lr then keeps the write at K, which
            is the NeurIPS form of Eq. 22 (decay eta K^T K, write P K).
        output: ``"identity"`` or ``"newton_schulz"`` (needs matrices; 0-D/1-D params go to AdamW).
        nesterov: update U + alpha m (torch SGD's Nesterov form); dot objective only.
        weight_decay: decoupled (p <- p (1 - lr wd)); ``decoupled_weight_decay=False`` adds wd * p to G.
        scale: Newton-Schulz output scale, ``"none"``, ``"shape"`` or ``"match_adamw"`` (``common.ns_scale``).
        dtensor: ``"gather"`` or ``"error"`` for sharded (FSDP2) params when the full matrix is needed.
        adamw*: options of the AdamW fallback (group flag ``adamw``: None auto, True, False).
    """

    def __init__(self, params, lr: float = 1e-2, momentum: float = 0.9, *, objective: str = "dot",
                 mem_lr: float = 1.0, layout: str = "matrix",
                 feature_map: str | Callable[[Tensor], Tensor] = "identity",
                 poly_coeffs: tuple[float, ...] = (1.0, 0.0, 1.0 / 6.0),
                 values: str | Callable[[Tensor, dict], Tensor] = "identity", values_beta: float = 0.999,
                 value_scale: float = 1.0,
                 output: str = "identity", nesterov: bool = False, weight_decay: float = 0.0,
                 decoupled_weight_decay: bool = True, ns_steps: int = 5, ns_method: str = "quintic",
                 scale: str = "none", eps: float = 1e-8, dtensor: str = "gather", **adamw: Any) -> None:
        unknown = set(adamw) - set(ADAMW_DEFAULTS)
        if unknown:
            raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
        defaults = dict(lr=lr, momentum=momentum, objective=objective, mem_lr=mem_lr, layout=layout,
                        feature_map=feature_map, poly_coeffs=tuple(poly_coeffs), values=values,
                        values_beta=values_beta, value_scale=value_scale, output=output, nesterov=nesterov,
                        weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, ns_steps=ns_steps, ns_method=ns_method,
                        scale=scale, eps=eps, dtensor=dtensor, **{**ADAMW_DEFAULTS, **adamw})
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._check_group(self.param_groups[-1])

    @staticmethod
    def _check_group(group: dict[str, Any]) -> None:
        check_range("lr", group["lr"], 0.0, float("inf"))
        check_range("momentum", group["momentum"], 0.0, 1.0, hi_open=True)
        check_range("mem_lr", group["mem_lr"], 0.0, float("inf"))
        check_range("weight_decay", group["weight_decay"], 0.0, float("inf"))
        check_range("value_scale", group["value_scale"], 0.0, float("inf"))
        check_choice("objective", group["objective"], OBJECTIVES)
        check_choice("layout", group["layout"], LAYOUTS)
        check_choice("output", group["output"], OUTPUTS)
        check_choice("ns_method", group["ns_method"], METHODS)
        check_choice("dtensor", group["dtensor"], ("gather", "error"))
        if not callable(group["feature_map"]):
            check_choice("feature_map", group["feature_map"], FEATURE_MAPS)
        if not callable(group["values"]):
            check_choice("values", group["values"], VALUES)
        if group["nesterov"] and group["objective"] != "dot":
            raise ValueError("nesterov=True is defined for objective='dot' only")
        if int(group["ns_steps"]) < 1:
            raise ValueError(f"ns_steps must be >= 1, got {group['ns_steps']}")
        ns_scale((1, 1), group["scale"])  # validates the name

    def _matrix_only(self, group: dict[str, Any]) -> bool:
        return group["output"] == "newton_schulz"

    def _memory_update(self, p: Tensor, g: Tensor, state: dict[str, Any], group: dict[str, Any]) -> Tensor:
        """Write the gradient into the memory; return the read-out (before the output map)."""
        if "momentum_buffer" not in state:
            state["step"] = 0
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        m = state["momentum_buffer"]
        alpha, eta = group["momentum"], group["mem_lr"]
        k = apply_feature_map(g, group)
        u = apply_values(k, state, group)
        if group["value_scale"] != 1.0:
            u = u * group["value_scale"]
        if group["objective"] == "dot":
            m.mul_(alpha).add_(u, alpha=eta)
        elif group["layout"] == "elementwise":
            m.mul_(alpha - eta * k * k).add_(u, alpha=eta)
        else:
            mf = full_tensor(m, group, type(self).__name__, "the l2 matrix memory")
            kf = full_tensor(k, group, type(self).__name__, "the l2 matrix memory")
            uf = full_tensor(u, group, type(self).__name__, "the l2 matrix memory")
            m.copy_(shard_like(l2_matrix_update(mf, kf, uf, alpha, eta), m))
        if group["nesterov"]:
            return u.add(m, alpha=alpha)
        return m

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        name = type(self).__name__
        jobs: dict[tuple, list[tuple[Tensor, Tensor, float]]] = defaultdict(list)
        for group in self.param_groups:
            lr = group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                check_grad(p, g, name)
                state = self.state[p]
                if uses_adamw(p, group, self._matrix_only(group), name):
                    adamw_step(p, g, state, group)
                    continue
                if group["weight_decay"] != 0 and not group["decoupled_weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                direction = self._memory_update(p, g, state, group)
                if group["decoupled_weight_decay"]:
                    decay_weights(p, lr, group["weight_decay"])
                if group["output"] == "newton_schulz":
                    full = full_tensor(direction, group, name, "Newton-Schulz")
                    coef = -lr * ns_scale(p.shape, group["scale"])
                    jobs[(group["ns_steps"], group["ns_method"])].append((p, matrix_view(full), coef))
                else:
                    p.add_(direction, alpha=-lr)
        for (steps, method), items in jobs.items():
            outs = newton_schulz_many([mat for _, mat, _ in items], steps=steps, method=method)
            for (p, _, coef), o in zip(items, outs):
                p.add_(shard_like(o.reshape(p.shape), p), alpha=coef)
        return loss
