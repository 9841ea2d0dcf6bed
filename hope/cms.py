"""Continuum Memory System: a chain of MLP levels, each updated in context at its own frequency.

Paper Eq. 30-31 (sequential CMS, arXiv Eq. 73) with a pre-norm residual per level (DESIGN.md section 3):
``y <- y + MLP_l(RMSNorm(y))``, fastest level first. A level with ``chunk_size=C`` takes a summed-gradient step
on its associative objective after every C tokens; ``chunk_size=None`` is a static MLP (a Transformer FFN is
the one-level, static case). State in, state out: streaming a sequence through several calls equals one call.

``combine="sum"`` is the independent variant (paper Eq. 74, ``y = Agg(MLP_1(x), ..., MLP_K(x))`` with a sum):
every level reads the same input and no norm or residual is added, so the system can stand in for the MLP of
a block that has its own norm and residual; with levels seeded from that MLP (``hope.adapt``, ad-hoc level
stacking, paper section 7.3) and step size 0 it is that MLP exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hope.ops.backend import get_ops
from hope.ops.cms import CMSLevelState
from hope.ops.cms.common import read_level
from hope.ops.common import ACTIVATIONS

COMBINE = ("chain", "sum")


def default_hidden(dim: int) -> int:
    """SwiGLU width with the parameters of a 4x GELU MLP (8/3 dim), rounded up to a multiple of 32."""
    return 32 * math.ceil(8 * dim / 3 / 32)


class CMSLevel(nn.Module):
    """One CMS level: a pre-norm residual SwiGLU MLP, static or updated in context every ``chunk_size`` tokens.

    ``dim`` may be left out when the level is handed to :class:`ContinuumMemorySystem`, which builds it.
    ``step_init`` is the initial ``eta * chunk_size`` (``eta`` is learned; ``eta = 0`` is a static MLP with the
    same weights). ``backend`` picks the implementation of the in-context update.

    Other MLP forms, to seed a level exactly from a pretrained MLP (``hope.adapt``): ``act`` (the gate's
    activation, or the hidden one when ``gated=False``: ``W_down s(W_up x + b_up) + b_down``, GPT-2), ``bias``
    (static biases ``b_gate``, ``b_up``, ``b_down``) and ``norm=False`` (no RMSNorm before the MLP, for a host
    block that normalizes already).

    ``first_order=True``: the outer gradient treats the in-context step's summed inner gradient as a constant
    (``theta_{j+1} = theta_j - eta sg(d_j)``; no second-order backward, and ``w_key``, ``w_value`` get no
    gradient); the forward is unchanged (docs/semantics.md, CMS item 7). ``unit_kv=False``: raw (not
    L2-normalized) keys and values in the associative objective (the ablation of CMS item 1).
    """

    def __init__(self, chunk_size: int | None = None, dim: int | None = None, hidden: int | None = None,
                 step_init: float = 0.1, backend: str = "auto", norm_eps: float = 1e-6, *, norm: bool = True,
                 act: str = "silu", gated: bool = True, bias: bool = False, first_order: bool = False,
                 unit_kv: bool = True) -> None:
        super().__init__()
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int or None (static), got {chunk_size!r}")
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown CMS activation {act!r}; expected one of {ACTIVATIONS}")
        self.chunk_size, self.hidden, self.step_init = chunk_size, hidden, step_init
        self.backend, self.norm_eps, self.dim = backend, norm_eps, None
        self.use_norm, self.act, self.gated, self.bias = norm, act, gated, bias
        self.first_order, self.unit_kv = first_order, unit_kv
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
        self.norm = nn.RMSNorm(dim, eps=self.norm_eps) if self.use_norm else nn.Identity()
        self.w_gate = nn.Parameter(torch.empty(self.hidden, dim)) if self.gated else None
        self.w_up = nn.Parameter(torch.empty(self.hidden, dim))
        self.w_down = nn.Parameter(torch.empty(dim, self.hidden))
        if self.bias:
            self.b_gate = nn.Parameter(torch.zeros(self.hidden)) if self.gated else None
            self.b_up = nn.Parameter(torch.zeros(self.hidden))
            self.b_down = nn.Parameter(torch.zeros(dim))
        if self.chunk_size is not None:
            self.w_key = nn.Parameter(torch.empty(dim, dim))
            self.w_value = nn.Parameter(torch.empty(dim, dim))
            self.eta = nn.Parameter(torch.tensor(self.step_init / self.chunk_size))
        self.reset_parameters()
        return self

    def reset_parameters(self, std: float = 0.02) -> None:
        for w in (self.w_gate, self.w_up, self.w_down):
            if w is not None:
                nn.init.normal_(w, std=std)
        if self.bias:
            for b in (self.b_gate, self.b_up, self.b_down):
                if b is not None:
                    nn.init.zeros_(b)
        if self.chunk_size is not None:
            nn.init.normal_(self.w_key, std=1 / math.sqrt(self.dim))
            nn.init.normal_(self.w_value, std=1 / math.sqrt(self.dim))
            with torch.no_grad():
                self.eta.fill_(self.step_init / self.chunk_size)
        if self.use_norm:
            self.norm.reset_parameters()

    def weights(self) -> CMSLevelState:
        """The level's meta-learned weights (and form) as a state: theta_0, shared by all sequences."""
        biases = (self.b_gate, self.b_up, self.b_down) if self.bias else (None, None, None)
        return CMSLevelState.from_weights(self.w_gate, self.w_up, self.w_down, *biases, act=self.act)

    def init_state(self) -> CMSLevelState | None:
        """State at the start of a sequence (None for a static level, which has none)."""
        return None if self.chunk_size is None else self.weights()

    def forward(self, x: Tensor, state: CMSLevelState | None = None) -> tuple[Tensor, CMSLevelState | None]:
        """``x + MLP(norm(x))`` and the new state (the chained, pre-norm residual form)."""
        y, state = self.mlp(x, state)
        return x + y, state

    def mlp(self, x: Tensor, state: CMSLevelState | None = None) -> tuple[Tensor, CMSLevelState | None]:
        """The level's contribution ``MLP(norm(x))`` alone (no residual), and the new state."""
        if self.dim is None:
            raise RuntimeError("CMSLevel has no dim: pass dim=... or use it inside ContinuumMemorySystem")
        a = self.norm(x)
        if self.chunk_size is None:
            return read_level(self.weights(), a)[0], None
        state = self.init_state() if state is None else state
        if (state.act, state.gated, state.b_in is not None) != (self.act, self.gated, self.bias):
            raise ValueError(f"CMS state of form (act={state.act}, gated={state.gated}, bias={state.b_in is not None})"
                             f" passed to a level of form (act={self.act}, gated={self.gated}, bias={self.bias})")
        op = get_ops(self.backend, x.device).cms_level
        with torch.autocast(x.device.type, enabled=False):  # in-context weights and steps in fp32
            y, state = op(a.float(), self.w_key, self.w_value, self.eta.clamp(min=0), state,
                          chunk_size=self.chunk_size, first_order=self.first_order, unit_kv=self.unit_kv)
        return y, state

    def extra_repr(self) -> str:
        form = "" if (self.act, self.gated, self.bias, self.use_norm) == ("silu", True, False, True) else \
            f", act={self.act}, gated={self.gated}, bias={self.bias}, norm={self.use_norm}"
        order = ", first_order=True" if self.first_order else ""
        order += "" if self.unit_kv else ", unit_kv=False"
        return f"dim={self.dim}, hidden={self.hidden}, chunk_size={self.chunk_size}{form}{order}"


class ContinuumMemorySystem(nn.Module):
    """A chain of :class:`CMSLevel` s (fastest first): a stateful drop-in for a Transformer FFN.

    ``y, state = cms(x, state)`` with ``x (B, T, dim)``; ``state`` is a list with one entry per level.
    ``combine="chain"``: ``y <- y + level(y)`` level after level (paper Eq. 73); ``"sum"``: ``y = sum_l
    MLP_l(x)``, every level on the same input, no residual (the independent variant, Eq. 74).
    """

    def __init__(self, dim: int, levels: list[CMSLevel] | None = None, hidden: int | None = None,
                 combine: str = "chain") -> None:
        super().__init__()
        if combine not in COMBINE:
            raise ValueError(f"unknown CMS combine {combine!r}; expected one of {COMBINE}")
        levels = levels if levels is not None else [CMSLevel(None)]
        self.dim, self.combine = dim, combine
        self.levels = nn.ModuleList([lvl.build(dim, hidden) for lvl in levels])

    def init_state(self) -> list[CMSLevelState | None]:
        return [lvl.init_state() for lvl in self.levels]

    def forward(self, x: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"expected input (batch, time, {self.dim}), got {tuple(x.shape)}")
        state = self.init_state() if state is None else state
        if len(state) != len(self.levels):
            raise ValueError(f"state has {len(state)} entries for {len(self.levels)} CMS levels")
        new_state, y = [], 0
        for level, s in zip(self.levels, state):
            if self.combine == "chain":
                x, s = level(x, s)
            else:
                out, s = level.mlp(x, s)
                y = y + out
            new_state.append(s)
        return (x if self.combine == "chain" else y), new_state
