"""Continuum Memory System: a chain of MLP levels, each updated in context at its own frequency.

Paper Eq. 30-31 (sequential CMS, arXiv Eq. 73) with a pre-norm residual per level (DESIGN.md section 3):
``y <- y + MLP_l(RMSNorm(y))``, fastest level first. A level with ``chunk_size=C`` takes a summed-gradient step
on its associative objective after every C tokens; ``chunk_size=None`` is a static MLP (a Transformer FFN is
the one-level, static case). State in, state out: streaming a sequence through several calls equals one call.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hope.ops.backend import get_ops
from hope.ops.cms import CMSLevelState, swiglu


def default_hidden(dim: int) -> int:
    """SwiGLU width with the parameters of a 4x GELU MLP (8/3 dim), rounded up to a multiple of 32."""
    return 32 * math.ceil(8 * dim / 3 / 32)


class CMSLevel(nn.Module):
    """One CMS level: a pre-norm residual SwiGLU MLP, static or updated in context every ``chunk_size`` tokens.

    ``dim`` may be left out when the level is handed to :class:`ContinuumMemorySystem`, which builds it.
    ``step_init`` is the initial ``eta * chunk_size`` (``eta`` is learned; ``eta = 0`` is a static MLP with the
    same weights). ``backend`` picks the implementation of the in-context update.
    """

    def __init__(self, chunk_size: int | None = None, dim: int | None = None, hidden: int | None = None,
                 step_init: float = 0.1, backend: str = "auto", norm_eps: float = 1e-6) -> None:
        super().__init__()
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int or None (static), got {chunk_size!r}")
        self.chunk_size, self.hidden, self.step_init = chunk_size, hidden, step_init
        self.backend, self.norm_eps, self.dim = backend, norm_eps, None
        if dim is not None:
            self.build(dim)

    def build(self, dim: int, hidden: int | None = None) -> CMSLevel:
        """Create the parameters for model width ``dim`` (once)."""
        if self.dim is not None:
            if dim != self.dim:
                raise ValueError(f"CMSLevel was built for dim={self.dim}, not {dim}")
            return self
        self.dim = dim
        self.hidden = self.hidden or hidden or default_hidden(dim)
        self.norm = nn.RMSNorm(dim, eps=self.norm_eps)
        self.w_gate = nn.Parameter(torch.empty(self.hidden, dim))
        self.w_up = nn.Parameter(torch.empty(self.hidden, dim))
        self.w_down = nn.Parameter(torch.empty(dim, self.hidden))
        if self.chunk_size is not None:
            self.w_key = nn.Parameter(torch.empty(dim, dim))
            self.w_value = nn.Parameter(torch.empty(dim, dim))
            self.eta = nn.Parameter(torch.tensor(self.step_init / self.chunk_size))
        self.reset_parameters()
        return self

    def reset_parameters(self, std: float = 0.02) -> None:
        for w in (self.w_gate, self.w_up, self.w_down):
            nn.init.normal_(w, std=std)
        if self.chunk_size is not None:
            nn.init.normal_(self.w_key, std=1 / math.sqrt(self.dim))
            nn.init.normal_(self.w_value, std=1 / math.sqrt(self.dim))
            with torch.no_grad():
                self.eta.fill_(self.step_init / self.chunk_size)
        self.norm.reset_parameters()

    def init_state(self) -> CMSLevelState | None:
        """State at the start of a sequence (None for a static level, which has none)."""
        if self.chunk_size is None:
            return None
        return CMSLevelState.from_weights(self.w_gate, self.w_up, self.w_down)

    def forward(self, x: Tensor, state: CMSLevelState | None = None) -> tuple[Tensor, CMSLevelState | None]:
        if self.dim is None:
            raise RuntimeError("CMSLevel has no dim: pass dim=... or use it inside ContinuumMemorySystem")
        a = self.norm(x)
        if self.chunk_size is None:
            return x + swiglu(self.w_gate, self.w_up, self.w_down, a), None
        state = self.init_state() if state is None else state
        op = get_ops(self.backend, x.device).cms_level
        with torch.autocast(x.device.type, enabled=False):  # in-context weights and steps in fp32
            y, state = op(a.float(), self.w_key, self.w_value, self.eta.clamp(min=0), state,
                          chunk_size=self.chunk_size)
        return x + y, state

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.hidden}, chunk_size={self.chunk_size}"


class ContinuumMemorySystem(nn.Module):
    """A chain of :class:`CMSLevel` s (fastest first): a stateful drop-in for a Transformer FFN.

    ``y, state = cms(x, state)`` with ``x (B, T, dim)``; ``state`` is a list with one entry per level.
    """

    def __init__(self, dim: int, levels: list[CMSLevel] | None = None, hidden: int | None = None) -> None:
        super().__init__()
        levels = levels if levels is not None else [CMSLevel(None)]
        self.dim = dim
        self.levels = nn.ModuleList([lvl.build(dim, hidden) for lvl in levels])

    def init_state(self) -> list[CMSLevelState | None]:
        return [lvl.init_state() for lvl in self.levels]

    def forward(self, x: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected input (batch, time, {self.dim}), got {tuple(x.shape)}")
        state = self.init_state() if state is None else state
        if len(state) != len(self.levels):
            raise ValueError(f"state has {len(state)} entries for {len(self.levels)} CMS levels")
        new_state = []
        for level, s in zip(self.levels, state):
            x, s = level(x, s)
            new_state.append(s)
        return x, new_state
