"""DMGD: Deep Momentum Gradient Descent, momentum as an MLP memory (paper Eq. 23).

Delta momentum (``assoc_momentum``) is a linear memory m: R^b -> R^a trained on key/value pairs
(k_r, e_r), where the keys are the rows of K = phi(G) (short side first) and the values are the columns
of P = I; the parameter update is the memory read at the canonical queries, m(I) = m. DMGD keeps that
exactly and makes the memory deeper:

    m_Phi(z) = A z + W1 s(W2 z),   A in R^{a x b},  W1 in R^{a x h},  W2 in R^{h x b}

(a linear skip plus a width-h MLP, one memory per parameter tensor, acting on gradient rows). Per step,
with Z = K^T (b x a, one key per column) and Y = m_Phi(Z) (a x a), the inner objective is

    dot: L = -<Y, c I>            l2: L = 1/2 ||Y - c I||_F^2      (c = ``value_scale``, default 1)

and each of A, W1, W2 takes one analytic GD step (``inner_grads``; no autograd):
    D = dL/dY = -c I (dot) or Y - c I (l2);  dA = D K;  dW1 = D s(H)^T;  dW2 = ((W1^T D) * s'(H)) K,  H = W2 Z
    A <- alpha A - eta dA,  W1 <- alpha W1 - eta_mlp dW1,  W2 <- W2 - eta_mlp dW2
(W2, the memory's key encoder, is not decayed: decaying it would erase the random features the MLP reads.)

The update is the read-out at the canonical basis, U = m_Phi(I) = A + W1 s(W2) (column j = m_Phi(e_j)),
optionally through Newton-Schulz: W <- W - lr sigma(U). With ``hidden=0`` (a linear memory) the memory
is A alone, and DMGD is exactly dot momentum (torch SGD) or delta momentum (``objective="l2"``).

Cost per step: O(h a b) for dot, plus O(a^2 b) for l2 (Y is a x a, a = the short side). Memory: the
parameter's size plus h (a + b). 0-D/1-D parameters are a single row (a = 1). DTensor (FSDP2) parameters
are rejected: the MLP needs the full gradient matrix (use DMGD with DDP, or AdamW for sharded params).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim import Optimizer

from .assoc_momentum import FEATURE_MAPS, apply_feature_map
from .common import (
    ADAMW_DEFAULTS,
    adamw_step,
    check_choice,
    check_grad,
    check_range,
    decay_weights,
    is_dtensor,
    matrix_view,
    ns_scale,
    oriented,
    uses_adamw,
)
from .newton_schulz import METHODS, newton_schulz_many

ACTIVATIONS = ("silu", "tanh", "gelu", "identity")


def activation(h: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """s(h) and s'(h) for the memory's hidden non-linearity."""
    if name == "silu":
        sig = torch.sigmoid(h)
        return h * sig, sig * (1 + h * (1 - sig))
    if name == "tanh":
        t = torch.tanh(h)
        return t, 1 - t * t
    if name == "gelu":
        cdf = 0.5 * (1 + torch.erf(h * 0.7071067811865476))
        pdf = torch.exp(-0.5 * h * h) * 0.3989422804014327
        return F.gelu(h), cdf + h * pdf
    return h, torch.ones_like(h)


def inner_grads(a: Tensor, w1: Tensor | None, w2: Tensor | None, k: Tensor, objective: str,
                act: str, value_scale: float = 1.0) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Analytic gradients of the inner objective (target c I) w.r.t. (A, W1, W2); oriented (a x b) views."""
    eye = value_scale * torch.eye(k.shape[0], dtype=k.dtype, device=k.device)
    s = ds = hidden = None
    if w1 is not None:
        hidden = w2 @ k.mT  # h x a
        s, ds = activation(hidden, act)
    if objective == "dot":
        d = -eye
    else:
        y = a @ k.mT
        if w1 is not None:
            y = y + w1 @ s
        d = y - eye
    ga = d @ k
    if w1 is None:
        return ga, None, None
    gw1 = d @ s.mT
    gw2 = ((w1.mT @ d) * ds) @ k
    return ga, gw1, gw2


def read_out(a: Tensor, w1: Tensor | None, w2: Tensor | None, act: str) -> Tensor:
    """U = m_Phi(I) = A + W1 s(W2): the memory evaluated at every canonical query."""
    if w1 is None:
        return a
    return a + w1 @ activation(w2, act)[0]


class DMGD(Optimizer):
    """Deep momentum: a per-tensor MLP memory of gradient rows, updated by its own analytic GD step.

    Args:
        lr: outer step. momentum: retention alpha of A and W1. mem_lr: eta for A. mlp_lr: eta for W1, W2
            (default mem_lr). hidden: MLP width h (0 = linear memory = momentum). activation: s.
        objective: ``"dot"`` or ``"l2"``. feature_map, value_scale: as in ``AssocMomentum``.
        init_scale: W2 ~ N(0, init_scale^2 / b), W1 = 0, A = 0. seed: generator seed for W2.
        output: ``"identity"`` or ``"newton_schulz"`` (0-D/1-D params then go to AdamW).
    """

    def __init__(self, params, lr: float = 1e-2, momentum: float = 0.9, *, hidden: int = 8,
                 objective: str = "dot", mem_lr: float = 1.0, mlp_lr: float | None = None,
                 activation: str = "silu", feature_map: str | Callable[[Tensor], Tensor] = "identity",
                 poly_coeffs: tuple[float, ...] = (1.0, 0.0, 1.0 / 6.0), value_scale: float = 1.0,
                 init_scale: float = 1.0,
                 seed: int = 0, output: str = "identity", weight_decay: float = 0.0, ns_steps: int = 5,
                 ns_method: str = "quintic", scale: str = "none", eps: float = 1e-8, **adamw: Any) -> None:
        unknown = set(adamw) - set(ADAMW_DEFAULTS)
        if unknown:
            raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
        defaults = dict(lr=lr, momentum=momentum, hidden=hidden, objective=objective, mem_lr=mem_lr,
                        mlp_lr=mlp_lr, activation=activation, feature_map=feature_map,
                        poly_coeffs=tuple(poly_coeffs), value_scale=value_scale, init_scale=init_scale,
                        seed=seed, output=output,
                        weight_decay=weight_decay, ns_steps=ns_steps, ns_method=ns_method, scale=scale,
                        eps=eps, **{**ADAMW_DEFAULTS, **adamw})
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        check_range("lr", group["lr"], 0.0, float("inf"))
        check_range("momentum", group["momentum"], 0.0, 1.0, hi_open=True)
        check_range("mem_lr", group["mem_lr"], 0.0, float("inf"))
        if group["mlp_lr"] is not None:
            check_range("mlp_lr", group["mlp_lr"], 0.0, float("inf"))
        if not isinstance(group["hidden"], int) or group["hidden"] < 0:
            raise ValueError(f"hidden must be an int >= 0, got {group['hidden']!r}")
        check_choice("objective", group["objective"], ("dot", "l2"))
        check_choice("activation", group["activation"], ACTIVATIONS)
        check_choice("output", group["output"], ("identity", "newton_schulz"))
        check_choice("ns_method", group["ns_method"], METHODS)
        if not callable(group["feature_map"]):
            check_choice("feature_map", group["feature_map"], FEATURE_MAPS)
        ns_scale((1, 1), group["scale"])

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any], index: int) -> None:
        a_rows, b_cols = sorted(matrix_view(p).shape)
        state["step"] = 0
        state["mem_a"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        h = group["hidden"]
        if h > 0:
            gen = torch.Generator(device="cpu").manual_seed(group["seed"] + index)
            w2 = torch.randn(h, b_cols, generator=gen, dtype=torch.float64)
            w2 *= group["init_scale"] / b_cols**0.5
            state["mem_w2"] = w2.to(device=p.device, dtype=p.dtype)
            state["mem_w1"] = torch.zeros(a_rows, h, device=p.device, dtype=p.dtype)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        jobs: dict[tuple, list[tuple[Tensor, Tensor, float]]] = defaultdict(list)
        index = -1
        for group in self.param_groups:
            lr = group["lr"]
            alpha, eta = group["momentum"], group["mem_lr"]
            eta_mlp = eta if group["mlp_lr"] is None else group["mlp_lr"]
            for p in group["params"]:
                index += 1  # position in the optimizer: seeds W2 independently of stepping order
                if p.grad is None:
                    continue
                check_grad(p, p.grad, "DMGD")
                state = self.state[p]
                if uses_adamw(p, group, group["output"] == "newton_schulz", "DMGD"):
                    adamw_step(p, p.grad, state, group)
                    continue
                if is_dtensor(p):
                    raise ValueError(f"DMGD: parameter of shape {tuple(p.shape)} is a DTensor (FSDP2 shard); "
                                     "the MLP memory needs the full gradient matrix. Flag its group "
                                     "adamw=True")
                if not state:
                    self._init_state(p, state, group, index)
                state["step"] += 1
                k = oriented(matrix_view(apply_feature_map(p.grad, group)))
                a = oriented(matrix_view(state["mem_a"]))
                w1, w2 = state.get("mem_w1"), state.get("mem_w2")
                ga, gw1, gw2 = inner_grads(a, w1, w2, k, group["objective"], group["activation"],
                                           group["value_scale"])
                a.mul_(alpha).sub_(ga, alpha=eta)  # a is a view of state["mem_a"]
                if w1 is not None:
                    w1.mul_(alpha).sub_(gw1, alpha=eta_mlp)
                    w2.sub_(gw2, alpha=eta_mlp)
                u = read_out(a, w1, w2, group["activation"])
                u = u.mT if matrix_view(p).shape[0] > matrix_view(p).shape[1] else u
                decay_weights(p, lr, group["weight_decay"])
                if group["output"] == "newton_schulz":
                    coef = -lr * ns_scale(p.shape, group["scale"])
                    jobs[(group["ns_steps"], group["ns_method"])].append((p, u, coef))
                else:
                    p.add_(u.reshape(p.shape), alpha=-lr)
        for (steps, method), items in jobs.items():
            outs = newton_schulz_many([u for _, u, _ in items], steps=steps, method=method)
            for (p, _, coef), o in zip(items, outs):
                p.add_(o.reshape(p.shape), alpha=coef)
        return loss
