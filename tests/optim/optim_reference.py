"""Plain reference implementations used by the optimizer tests (written independently of hope.optim)."""

from __future__ import annotations

import torch

QUINTIC_ABC = (3.4445, -4.7750, 2.0315)


def ns_plain(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Muon's quintic Newton-Schulz for one matrix, written out step by step."""
    a, b, c = QUINTIC_ABC
    x = g.double()
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.t()
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        s = x @ x.t()
        x = a * x + b * (s @ x) + c * (s @ s @ x)
    if transposed:
        x = x.t()
    return x.to(g.dtype)


def muon_plain(w: torch.Tensor, grads: list[torch.Tensor], lr: float, beta: float,
               scale: float) -> torch.Tensor:
    """Nesterov heavy ball (torch SGD buffer) + Newton-Schulz, as in Keller Jordan's Muon."""
    w = w.clone()
    buf = torch.zeros_like(w)
    for g in grads:
        buf = beta * buf + g
        d = g + beta * buf
        w = w - lr * scale * ns_plain(d)
    return w


def m3_plain(w: torch.Tensor, grads: list[torch.Tensor], lr: float, b1: float, b2: float, b3: float,
             alpha: float, f: int | None, eps: float) -> torch.Tensor:
    """Algorithm 1 (EMA form, division after Newton-Schulz) for one matrix."""
    w = w.clone()
    m1 = torch.zeros_like(w)
    v = torch.zeros_like(w)
    m2 = torch.zeros_like(w)
    o2 = torch.zeros_like(w)
    chunk: list[torch.Tensor] = []
    for t, g in enumerate(grads, start=1):
        m1 = b1 * m1 + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vhat = v / (1 - b2**t)
        o1 = ns_plain(m1)
        w = w - lr * (o1 + alpha * o2) / (vhat.sqrt() + eps)
        if f is not None:
            chunk.append(g)
            if t % f == 0:
                m2 = b3 * m2 + (1 - b3) * torch.stack(chunk).mean(0)
                chunk = []
                o2 = ns_plain(m2)
    return w
