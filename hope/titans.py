"""Self-modifying Titans token mixer (paper Eq. 83-93; DESIGN.md section 3, SMT items 1-8).

The keys and values come from adaptive memories M_k, M_v read at their chunk-start state; every memory
writes a self-generated target M_m(v) with Delta Gradient Descent; the main memory M_mem is read per token
with the static query. ``self_modifying=False`` is plain Titans: static keys and values, target v.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from hope.ops.backend import get_ops
from hope.ops.dgd.common import MemoryState, l2norm


@dataclasses.dataclass
class TitansState:
    """Recurrent state of the mixer: the causal-conv cache and the memories' in-context state."""

    conv: Tensor
    mem: MemoryState
    kv: MemoryState | None

    def detach(self) -> TitansState:
        return TitansState(self.conv.detach(), self.mem.detach(), None if self.kv is None else self.kv.detach())


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class SelfModifyingTitans(nn.Module):
    """Multi-head self-modifying Titans over a pre-normalized input ``a (B, T, D)``; returns ``(y, state)``."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        *,
        memory_hidden: int | None = None,
        chunk_memory: int = 16,
        chunk_other: int = 64,
        dgd: bool = True,
        momentum: bool = True,
        damping: bool = True,
        unit_target: bool = True,
        velocity_decay: bool = True,
        conv_size: int = 4,
        memory_act: str = "silu",
        eta_init: float = 0.3,
        alpha_init: float = 0.99,
        beta_init: float = 0.5,
        self_modifying: bool = True,
        backend: str = "auto",
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim={dim} must be divisible by n_heads={n_heads}")
        self.dim, self.n_heads, self.head_dim = dim, n_heads, dim // n_heads
        d, h = self.head_dim, memory_hidden or self.head_dim
        self.chunk_memory, self.chunk_other = chunk_memory, chunk_other
        self.dgd, self.momentum, self.memory_act = dgd, momentum, memory_act
        self.rule = dict(damping=damping, unit_target=unit_target, velocity_decay=velocity_decay)
        self.self_modifying, self.backend, self.conv_size = self_modifying, backend, conv_size
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        # (tap, channel): each tap's weights are one contiguous row, so the compiled conv vectorizes over channels
        self.conv_weight = nn.Parameter(torch.empty(conv_size, 3 * dim))
        self.gates = nn.Linear(dim, 3 * n_heads)  # eta, alpha, beta per head
        self.mem_w1 = nn.Parameter(torch.empty(n_heads, d, h))
        self.mem_w2 = nn.Parameter(torch.empty(n_heads, h, d))
        if self_modifying:
            self.kv_w1 = nn.Parameter(torch.empty(2, n_heads, d, h))
            self.kv_w2 = nn.Parameter(torch.empty(2, n_heads, h, d))
        self.head_norm = nn.RMSNorm(d, eps=norm_eps)
        self.out_gate = nn.Linear(dim, dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)
        self._gate_init = (eta_init, alpha_init, beta_init)
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        for lin in (self.qkv, self.out_gate, self.out_proj):
            nn.init.normal_(lin.weight, std=std)
        nn.init.normal_(self.conv_weight, std=1 / math.sqrt(self.conv_size))
        nn.init.normal_(self.gates.weight, std=std)
        with torch.no_grad():
            self.gates.bias.copy_(torch.tensor([_logit(p) for p in self._gate_init]).repeat_interleave(self.n_heads))
        w1s = [self.mem_w1] + ([self.kv_w1] if self.self_modifying else [])
        w2s = [self.mem_w2] + ([self.kv_w2] if self.self_modifying else [])
        for w1, w2 in zip(w1s, w2s):
            nn.init.normal_(w1, std=std)
            nn.init.normal_(w2, std=1 / math.sqrt(self.head_dim))
        self.head_norm.reset_parameters()

    @classmethod
    def from_config(cls, cfg) -> SelfModifyingTitans:
        return cls(cfg.dim, cfg.n_heads, memory_hidden=cfg.memory_hidden, chunk_memory=cfg.chunk_memory,
                   chunk_other=cfg.chunk_other, dgd=cfg.dgd, momentum=cfg.momentum, damping=cfg.dgd_damping,
                   unit_target=cfg.unit_targets, velocity_decay=cfg.velocity_decay, conv_size=cfg.conv_size,
                   memory_act=cfg.memory_act, eta_init=cfg.eta_init, alpha_init=cfg.alpha_init,
                   beta_init=cfg.beta_init, self_modifying=cfg.mixer == "smt", backend=cfg.backend,
                   norm_eps=cfg.norm_eps)

    def init_state(self, batch_size: int) -> TitansState:
        """The state at the start of a sequence: the meta-learned memories, an empty conv cache."""
        conv = self.conv_weight.new_zeros(batch_size, self.conv_size - 1, 3 * self.dim)
        mem = MemoryState.from_params(self.mem_w1, self.mem_w2, batch_size, self.momentum)
        kv = MemoryState.from_params(self.kv_w1, self.kv_w2, batch_size, self.momentum) if self.self_modifying \
            else None
        return TitansState(conv, mem, kv)

    def _conv(self, x: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
        """Causal depthwise conv over time, continuing from ``cache`` (the last ``conv_size - 1`` inputs):
        ``y_t = sum_i w_i * full_{t+i}`` as shifted products in the (batch, time, channel) layout, which
        ``torch.compile`` fuses into one pass (no transposes, no grouped ``conv1d``)."""
        full = torch.cat([cache, x], dim=1)
        T = x.shape[1]
        y = full[:, :T] * self.conv_weight[0]
        for i in range(1, self.conv_size):
            y = y + full[:, i:i + T] * self.conv_weight[i]
        return y, full[:, full.shape[1] - (self.conv_size - 1):]

    def forward(self, a: Tensor, state: TitansState | None = None) -> tuple[Tensor, TitansState]:
        if a.dim() != 3 or a.shape[-1] != self.dim:
            raise ValueError(f"expected input (batch, time, {self.dim}), got {tuple(a.shape)}")
        if state is None:
            state = self.init_state(a.shape[0])
        ops = get_ops(self.backend, a.device)
        qkv, conv = self._conv(self.qkv(a), state.conv)
        # contiguous: separate tensors, not views of one (batch, time, 3, heads, dim) buffer. Compiled, the
        # layout change fuses into the activation; views of one buffer leaving a compiled graph each get a
        # full-size zero-filled gradient and a strided copy in the backward
        q, k, v = (t.contiguous() for t in rearrange(F.silu(qkv), "b t (n h d) -> n b h t d", n=3, h=self.n_heads))
        eta, alpha, beta = (t.contiguous() for t in rearrange(torch.sigmoid(self.gates(a)), "b t (n h) -> n b h t",
                                                               n=3))
        kw = dict(dgd=self.dgd, momentum=self.momentum, act=self.memory_act, **self.rule)
        kv_state = None
        # the fast state and its updates run in fp32 whatever the autocast context (docs/semantics.md)
        with torch.autocast(a.device.type, enabled=False):
            q, k, v, eta, alpha, beta = (t.float() for t in (q, k, v, eta, alpha, beta))
            if self.self_modifying:
                k, v, kv_state = ops.smt_kv(k, v, eta, alpha, beta, state.kv, chunk_size=self.chunk_other, **kw)
            else:
                k = l2norm(k)
            o, mem = ops.dgd_memory(k, v, l2norm(q), eta, alpha, beta, state.mem, chunk_size=self.chunk_memory,
                                    self_target=self.self_modifying, **kw)
        o = rearrange(self.head_norm(o), "b h t d -> b t (h d)") * torch.sigmoid(self.out_gate(a))
        return self.out_proj(o), TitansState(conv, mem, kv_state)


class Titans(SelfModifyingTitans):
    """Plain Titans (LMM) token mixer: the same memory and DGD update with static keys and values
    (``k = L2norm(k~)``, ``v = v~``) and target ``v``; no key/value memories, no self-generated targets."""

    def __init__(self, dim: int, n_heads: int, **kwargs) -> None:
        if kwargs.pop("self_modifying", False):
            raise ValueError("Titans is the variant without self-modification; use SelfModifyingTitans")
        super().__init__(dim, n_heads, self_modifying=False, **kwargs)
