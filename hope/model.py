"""HopeBlock and HopeLM: a token mixer followed by a Continuum Memory System, as a language model.

``mixer="smt"`` is HOPE (paper Eq. 94-97), ``"titans"`` Titans (LMM), ``"attention"`` Hope-Attention; with
one static SwiGLU level and ``mixer="attention"`` it is Transformer++. Every block carries recurrent state in
and out, so a stream can be processed in any number of calls and generation is O(1) memory per token for
SMT/CMS.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hope.attention import CausalSelfAttention, KVCache
from hope.cms import CMSLevel, ContinuumMemorySystem
from hope.config import HopeConfig
from hope.ops.cms.common import CMSLevelState
from hope.ops.dgd.common import MemoryState
from hope.titans import SelfModifyingTitans, TitansState


@dataclasses.dataclass
class HopeOutput:
    logits: Tensor
    loss: Tensor | None
    state: list


def detach_state(state):
    """Cut a model state from the autograd graph (e.g. between windows of truncated back-propagation)."""
    if state is None or isinstance(state, int | float):
        return state
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, list | tuple):
        return type(state)(detach_state(s) for s in state)
    return state.detach()


def _select_rows(x: Tensor | None, idx: Tensor, dim: int) -> Tensor | None:
    return None if x is None else x.index_select(dim, idx.to(x.device))


def select_state(state, idx: Tensor):
    """The recurrent state of batch rows ``idx`` (repeats allowed: beam search, or one context continued by
    several continuations). Knows the layouts of :class:`KVCache` (batch axis 0), ``TitansState`` (axis 0 of
    the conv cache, just before the head axis in the memories) and ``CMSLevelState`` (axis 0 once per
    sequence, none before the first update)."""
    if state is None or isinstance(state, int | float):
        return state
    if isinstance(state, list | tuple):
        return type(state)(select_state(s, idx) for s in state)
    if isinstance(state, KVCache):
        return KVCache(_select_rows(state.k, idx, 0), _select_rows(state.v, idx, 0))
    if isinstance(state, TitansState):
        return dataclasses.replace(state, conv=_select_rows(state.conv, idx, 0), mem=select_state(state.mem, idx),
                                   kv=select_state(state.kv, idx))
    if isinstance(state, MemoryState):  # batch axis just before the head axis: dim -4 of (..., B, H, d, h)
        return dataclasses.replace(state, **{f: _select_rows(getattr(state, f), idx, getattr(state, f).dim() - 4)
                                             for f in ("w1", "w2", "a1", "a2", "v1", "v2")
                                             if getattr(state, f) is not None})
    if isinstance(state, CMSLevelState):
        return dataclasses.replace(state, **{f: _select_rows(getattr(state, f), idx, 0)
                                             for f in ("w_in", "w_out", "g_in", "g_out")
                                             if getattr(state, f) is not None and getattr(state, f).dim() == 3})
    raise TypeError(f"select_state does not know the state type {type(state).__name__}")


class HopeBlock(nn.Module):
    """``h = x + mixer(RMSNorm(x))``, then the CMS chain (each level a pre-norm residual MLP)."""

    def __init__(self, cfg: HopeConfig) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        if cfg.mixer == "attention":
            self.mixer = CausalSelfAttention.from_config(cfg)
        else:
            self.mixer = SelfModifyingTitans.from_config(cfg)
        step = cfg.cms_step_init
        levels = [CMSLevel(c, hidden=cfg.cms_hidden, step_init=step, backend=cfg.backend, norm_eps=cfg.norm_eps,
                           first_order=cfg.cms_first_order, unit_kv=cfg.cms_unit_kv) for c in cfg.cms_chunk_sizes]
        self.cms = ContinuumMemorySystem(cfg.dim, levels)

    def forward(self, x: Tensor, state: tuple | None = None) -> tuple[Tensor, tuple]:
        mixer_state, cms_state = (None, None) if state is None else state
        y, mixer_state = self.mixer(self.norm(x), mixer_state)
        x, cms_state = self.cms(x + y, cms_state)
        return x, (mixer_state, cms_state)


class HopeLM(nn.Module):
    """Decoder-only language model over :class:`HopeBlock` s. ``forward(input_ids, labels, state)``."""

    def __init__(self, cfg: HopeConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList([HopeBlock(cfg) for _ in range(cfg.n_layers)])
        self.norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=cfg.init_std)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        else:
            nn.init.normal_(self.lm_head.weight, std=cfg.init_std)

    def forward(self, input_ids: Tensor, labels: Tensor | None = None, state: list | None = None) -> HopeOutput:
        """Logits for ``input_ids (B, T)``; with ``labels`` (aligned with the inputs, shifted inside, -100
        ignored) also the mean next-token loss. ``state`` continues a stream (one entry per block)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, time), got shape {tuple(input_ids.shape)}")
        if input_ids.numel() and (int(input_ids.max()) >= self.config.vocab_size or int(input_ids.min()) < 0):
            raise ValueError(f"token id out of range [0, {self.config.vocab_size}) in input_ids")
        state = [None] * len(self.blocks) if state is None else state
        if len(state) != len(self.blocks):
            raise ValueError(f"state has {len(state)} entries for {len(self.blocks)} blocks")
        x = self.embed(input_ids)
        new_state = []
        for block, s in zip(self.blocks, state):
            x, s = block(x, s)
            new_state.append(s)
        logits = self.lm_head(self.norm(x))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return HopeOutput(logits, loss, new_state)

    @torch.no_grad()
    def generate(self, prompt_ids: Tensor, max_new_tokens: int = 32, temperature: float = 0.0,
                 top_k: int | None = None, eos_id: int | None = None, state: list | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """Continue ``prompt_ids (B, T)`` by ``max_new_tokens`` tokens: greedy when ``temperature == 0``,
        else sampling (optionally top-k). Returns the new tokens ``(B, max_new_tokens)``; after ``eos_id``
        a sequence repeats it. The recurrent state is carried, one token per step."""
        if prompt_ids.shape[1] == 0:
            raise ValueError("generate needs a prompt of at least one token")
        out = self(prompt_ids, state=state)
        logits, state = out.logits[:, -1], out.state
        tokens, done = [], torch.zeros(prompt_ids.shape[0], dtype=torch.bool, device=prompt_ids.device)
        for _ in range(max_new_tokens):
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                logits = logits.float() / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]
            if eos_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
                done |= nxt == eos_id
            tokens.append(nxt)
            out = self(nxt[:, None], state=state)
            logits, state = out.logits[:, -1], out.state
        return torch.stack(tokens, dim=1)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if exclude_embeddings else n
