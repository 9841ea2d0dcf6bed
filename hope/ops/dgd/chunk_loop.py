"""The sequential loop over whole chunks, as autograd Functions with an analytic backward.

The forward walks the chunks once without building a graph and keeps, per chunk, the anchors (chunk-start
weights), the incoming velocities and the token-level intermediates; the backward walks the chunks in reverse
and back-propagates each with the VJPs of :mod:`hope.ops.dgd.vjp`, carrying the cotangents of the state
from chunk to chunk. At the head sizes of the small presets the autograd graph of the unrolled loop (about
150 nodes per chunk) cost more than the arithmetic; this is also the structure a fused kernel follows
(hope/kernels/README.md). Everything that does not depend on the memory state is computed for all chunks at once
before the loop, under autograd: the gate products, the decay masks and, for the main memory's second layer
(whose input is the key), the inverse of the triangular system and the masked query-key product. The final
partial chunk is padded with tokens that change nothing (eta = 0, alpha = 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from hope.ops.common import l2norm
from hope.ops.dgd.common import (
    Flags,
    MemoryState,
    activation,
    activation_grad,
    collect_velocity,
    inner_grads,
    memory_forward,
    open_chunk,
)
from hope.ops.dgd.linear import ChunkGates, effective_eta, gated_step
from hope.ops.dgd.vjp import (
    effective_eta_vjp,
    gated_step_vjp,
    inner_grads_vjp,
    l2norm_vjp,
    memory_forward_vjp,
    start_chunk_vjp,
)

_GATE_FIELDS = ("eg", "egp", "eend", "elast", "strict", "causal")


def _end(f: Flags, w1e, w2e, a1, a2, v1, v2, c1, c2):
    """The state after a chunk that started from the anchors ``a1``, ``a2``: the velocity collects the change
    of the weights, or with ``velocity_decay=False`` the chunk's steps ``sum_t c_t u_t^T`` (``c1``, ``c2``: the
    gated steps' caches)."""
    if f.velocity_decay:
        return w1e, w2e, collect_velocity(v1, w1e, a1), collect_velocity(v2, w2e, a2)
    return w1e, w2e, *(None if v is None else v + c.c.transpose(-1, -2) @ c.u for v, c in ((v1, c1), (v2, c2)))


def _velocity_cotangents(f: Flags, g_w1, g_w2, g_v1, g_v2):
    """Split the cotangents of a chunk's end velocities over what produced them: returns those of the end
    weights, of the anchors and of the steps' sums (None unless ``velocity_decay=False``)."""
    if not f.momentum:
        return (g_w1, g_w2), (0, 0), (None, None)
    if f.velocity_decay:  # V_end = V_in + W_end - A
        return (g_w1 + g_v1, g_w2 + g_v2), (-g_v1, -g_v2), (None, None)
    return (g_w1, g_w2), (0, 0), (g_v1, g_v2)  # V_end = V_in + C^T U


def _chunked(t: Tensor, chunk_size: int, token_dim: int) -> Tensor:
    """Pad the token axis to a multiple of ``chunk_size`` with zeros and split it into (chunks, chunk_size)."""
    n = t.shape[token_dim]
    pad = -n % chunk_size
    if pad:
        widths = [0, 0] * (-token_dim - 1) + [0, pad]
        t = F.pad(t, widths)
    return t.unflatten(token_dim, (t.shape[token_dim] // chunk_size, chunk_size))


def _flat(t: Tensor | None, lead: tuple[int, ...], tail: int) -> Tensor | None:
    """``t`` broadcast to ``(*lead, *tail dims)`` with the leading dims merged into one batch axis: the
    memories are independent, and 3-D operands make every product a plain ``bmm``."""
    return None if t is None else t.expand(*lead, *t.shape[-tail:]).reshape(-1, *t.shape[-tail:])


def _gates_of(fields: list[Tensor], j: int) -> ChunkGates:
    return ChunkGates(*(f[j] for f in fields))


def _sum_gate_grads(steps) -> list[Tensor | None]:
    """The cotangent of each gate field summed over the gated steps that used it (None if none did)."""
    parts = [[s.gates[name] for s in steps if name in s.gates] for name in _GATE_FIELDS]
    return [sum(p) if p else None for p in parts]


def _stack(parts: list, dim: int) -> Tensor | None:
    return None if parts[0] is None else torch.stack(parts[::-1], dim)


# ---------------------------------------------------------------------------------------------------------
# main memory: per-token read-out with the query


def _memory_chunk(f: Flags, state, k, v, q, eta, eta2, gates, tinv, read, beta):
    """One chunk of the main memory from its starting ``state``; returns the read-out, the end state, the
    anchors and the intermediates the backward needs."""
    a1, a2, v1, v2 = open_chunk(*state, beta, f.momentum)
    mc = {}
    m = memory_forward(a1, a2, v, f.act, mc) if f.self_target else None
    target = (l2norm(m) if f.unit_target else m) if f.self_target else v
    ig = {}
    u1, e1, _, e2 = inner_grads(a1, a2, k, target, f.act, f.dgd, ig, f.damping)
    w2e, y2, c2 = gated_step(a2, k, e2, q, eta2, gates, f.dgd, tinv, read)
    hq = activation(y2, f.act)
    w1e, y1, c1 = gated_step(a1, u1, e1, hq, effective_eta(eta, u1, f.dgd), gates, f.dgd)
    saved = (a1, a2, m, mc, ig, u1, y2, c1, c2)
    return q + y1, _end(f, w1e, w2e, a1, a2, v1, v2, c1, c2), (a1, a2), saved


class MemoryChunks(torch.autograd.Function):
    """The main memory over chunked inputs ``(..., n_chunks, C, d)``; see the module docstring."""

    @staticmethod
    def forward(ctx, f: Flags, k, v, q, eta, eta2, eg, egp, eend, elast, strict, causal, tinv, read, beta,
                w1, w2, v1, v2):
        # unbind: one backward node stacks the chunks' gradients (indexing chunk by chunk would write a
        # full-size zero gradient per chunk)
        per_chunk = [t.unbind(-3) for t in (k, v, q, strict, causal, read)] + [t.unbind(-2) for t in
                                                                                (eta, eta2, eg, egp, eend, elast)]
        k_, v_, q_, strict_, causal_, read_, eta_, eta2_, eg_, egp_, eend_, elast_ = per_chunk
        tinv_ = [None] * len(k_) if tinv is None else tinv.unbind(-3)
        beta_ = beta.unbind(-1)
        fields = [eg_, egp_, eend_, elast_, strict_, causal_]
        state, starts, saved, outs = (w1, w2, v1, v2), [], [], []
        for j in range(len(k_)):
            starts.append(state[2:])  # the incoming velocities (for beta's gradient); W is in the anchors
            out, state, anchors, s = _memory_chunk(f, state, k_[j], v_[j], q_[j], eta_[j], eta2_[j],
                                                   _gates_of(fields, j), tinv_[j], read_[j], beta_[j])
            outs.append(out)
            saved.append(s)
        ctx.f, ctx.starts, ctx.saved = f, starts, saved
        ctx.chunks = (k_, v_, q_, eta_, eta2_, fields, tinv_, read_, beta_)
        # the anchors are also in ctx.saved: returning them uncloned would make a cycle (output -> node -> ctx)
        result = (torch.stack(outs, -3), state[0], state[1], *(a.clone() for a in anchors))
        return result + ((state[2], state[3]) if f.momentum else ())

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out, g_w1, g_w2, g_a1, g_a2, g_v1=None, g_v2=None):
        f = ctx.f
        k_, v_, q_, eta_, eta2_, fields, tinv_, read_, beta_ = ctx.chunks
        n = len(k_)
        acc = {name: [] for name in ("k", "v", "q", "eta", "eta2", "tinv", "read", "beta", *_GATE_FIELDS)}
        g_outs = g_out.unbind(-3)
        for j in reversed(range(n)):
            gates = _gates_of(fields, j)
            a1, a2, m, mc, ig, u1, y2, c1, c2 = ctx.saved[j]
            (gw1, gw2), (ga1, ga2), (gs1, gs2) = _velocity_cotangents(f, g_w1, g_w2, g_v1, g_v2)
            if j == n - 1:
                ga1, ga2 = ga1 + g_a1, ga2 + g_a2
            s1 = gated_step_vjp(c1, gates, f.dgd, gw1, g_outs[j], gs1)
            g_eta, g_u1 = effective_eta_vjp(eta_[j], u1, s1.eta, f.dgd)
            g_u1 = s1.u if g_u1 is None else s1.u + g_u1
            s2 = gated_step_vjp(c2, gates, f.dgd, gw2, s1.x * activation_grad(y2, f.act), gs2)
            g_k, g_target, ia1, ia2 = inner_grads_vjp(ig, a1, a2, k_[j], f.act, f.dgd, g_u1, s1.e, s2.e,
                                                      f.damping)
            ga1, ga2 = ga1 + s1.w + ia1, ga2 + s2.w + ia2
            if f.self_target:
                g_m = l2norm_vjp(m, g_target) if f.unit_target else g_target
                g_v, ma1, ma2 = memory_forward_vjp(a1, a2, v_[j], g_m, f.act, mc)
                ga1, ga2 = ga1 + ma1, ga2 + ma2
            else:
                g_v = g_target
            g_w1, g_v1, gb1 = start_chunk_vjp(ctx.starts[j][0], beta_[j], f.momentum, ga1, g_v1)
            g_w2, g_v2, gb2 = start_chunk_vjp(ctx.starts[j][1], beta_[j], f.momentum, ga2, g_v2)
            acc["k"].append(g_k + s2.u)
            acc["v"].append(g_v)
            acc["q"].append(g_outs[j] + s2.x)
            acc["eta"].append(g_eta)
            acc["eta2"].append(s2.eta)
            acc["tinv"].append(s2.tinv)
            acc["read"].append(s2.read)
            acc["beta"].append(gb1 + gb2 if f.momentum else None)
            for name, g in zip(_GATE_FIELDS, _sum_gate_grads((s1, s2))):
                acc[name].append(g)
        tok = [_stack(acc[name], -3) for name in ("k", "v", "q")]
        vec = [_stack(acc[name], -2) for name in ("eta", "eta2", "eg", "egp", "eend", "elast")]
        mats = [_stack(acc[name], -3) for name in ("strict", "causal", "tinv", "read")]
        return (None, *tok, *vec, *mats, _stack(acc["beta"], -1), g_w1, g_w2, g_v1, g_v2)


def memory_chunks(k, v, q, eta, log_alpha, beta, state: MemoryState, chunk_size: int, f: Flags):
    """Main memory over whole chunks starting at a chunk boundary (the last one may be partial)."""
    dgd, momentum = f.dgd, f.momentum
    T = k.shape[-2]
    k, v, q = (_chunked(t, chunk_size, -2) for t in (k, v, q))
    eta, log_alpha, beta = (_chunked(t, chunk_size, -1) for t in (eta, log_alpha, beta))  # padding: no-op
    gates = ChunkGates.from_log_alpha(log_alpha)
    eta2 = effective_eta(eta, k, dgd)  # the second layer's input is the key: state independent
    tinv = None
    if dgd:
        lower = eta2[..., :, None] * gates.strict * (k @ k.transpose(-1, -2))
        eye = torch.eye(chunk_size, dtype=k.dtype, device=k.device).expand_as(lower)
        tinv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
    read = gates.causal * (q @ k.transpose(-1, -2))
    lead = k.shape[:-3]
    out, *st = MemoryChunks.apply(
        f, *(_flat(t, lead, 3) for t in (k, v, q)),
        *(_flat(t, lead, 2) for t in (eta, eta2, gates.eg, gates.egp, gates.eend, gates.elast)),
        *(_flat(t, lead, 3) for t in (gates.strict, gates.causal, tinv, read)), _flat(beta[..., 0], lead, 1),
        *(_flat(t, lead, 2) for t in (state.w1, state.w2, state.v1, state.v2)))
    w1, w2, a1, a2, v1, v2 = (None if t is None else t.reshape(*lead, *t.shape[1:])
                              for t in (st if momentum else st + [None, None]))
    return out.reshape(*lead, -1, out.shape[-1])[..., :T, :], MemoryState(w1, w2, a1, a2, v1, v2, T % chunk_size)


# ---------------------------------------------------------------------------------------------------------
# key and value memories (stacked on a leading axis of 2): self-generated keys and values


def _kv_chunk(f: Flags, state, kv_in, eta, gates, beta):
    """One chunk of the key/value memories, flattened to ``M = 2N`` memories (M_k for the first N sequence-heads,
    then M_v): ``kv_in (M, C, d)`` their inputs; ``eta``, ``gates``, ``beta`` repeated for both. Returns the
    keys and values ``(N, C, d)``, the end state, the anchors and the intermediates of the backward."""
    a1, a2, v1, v2 = open_chunk(*state, beta, f.momentum)
    kvc, mc, ig = {}, {}, {}
    k_raw, v = memory_forward(a1, a2, kv_in, f.act, kvc).chunk(2)  # M_k(k~), M_v(v~) in one batched read
    k = l2norm(k_raw)
    k2, v2_ = k.repeat(2, 1, 1), v.repeat(2, 1, 1)  # each memory regresses M(k) onto its target of v
    m = memory_forward(a1, a2, v2_, f.act, mc)
    u1, e1, _, e2 = inner_grads(a1, a2, k2, l2norm(m) if f.unit_target else m, f.act, f.dgd, ig, f.damping)
    w2e, _, c2 = gated_step(a2, k2, e2, None, effective_eta(eta, k2, f.dgd), gates, f.dgd)
    w1e, _, c1 = gated_step(a1, u1, e1, None, effective_eta(eta, u1, f.dgd), gates, f.dgd)
    saved = (a1, a2, kvc, k_raw, k2, v2_, m, mc, ig, u1, c1, c2)
    return k, v, _end(f, w1e, w2e, a1, a2, v1, v2, c1, c2), (a1, a2), saved


class KVChunks(torch.autograd.Function):
    """The key and value memories over chunked inputs ``(..., n_chunks, C, d)``; see the module docstring."""

    @staticmethod
    def forward(ctx, f: Flags, kv_in, eta, eg, egp, eend, elast, strict, causal, beta, w1, w2, v1, v2):
        kv_, strict_, causal_ = (t.unbind(-3) for t in (kv_in, strict, causal))
        eta_, eg_, egp_, eend_, elast_ = (t.unbind(-2) for t in (eta, eg, egp, eend, elast))
        beta_ = beta.unbind(-1)
        fields = [eg_, egp_, eend_, elast_, strict_, causal_]
        state, starts, saved, ks, vs = (w1, w2, v1, v2), [], [], [], []
        for j in range(len(kv_)):
            starts.append(state[2:])  # the incoming velocities (for beta's gradient); W is in the anchors
            k, v, state, anchors, s = _kv_chunk(f, state, kv_[j], eta_[j], _gates_of(fields, j), beta_[j])
            ks.append(k)
            vs.append(v)
            saved.append(s)
        ctx.f, ctx.starts, ctx.saved, ctx.chunks = f, starts, saved, (kv_, eta_, fields, beta_)
        result = (torch.stack(ks, -3), torch.stack(vs, -3), state[0], state[1], *(a.clone() for a in anchors))
        return result + ((state[2], state[3]) if f.momentum else ())

    @staticmethod
    @once_differentiable
    def backward(ctx, g_k_out, g_v_out, g_w1, g_w2, g_a1, g_a2, g_v1=None, g_v2=None):
        f = ctx.f
        kv_, eta_, fields, beta_ = ctx.chunks
        n = len(kv_)
        acc = {name: [] for name in ("kv", "eta", "beta", *_GATE_FIELDS)}
        g_ks, g_vs = g_k_out.unbind(-3), g_v_out.unbind(-3)
        for j in reversed(range(n)):
            gates = _gates_of(fields, j)
            eta = eta_[j]
            a1, a2, kvc, k_raw, k2, v2_, m, mc, ig, u1, c1, c2 = ctx.saved[j]
            (gw1, gw2), (ga1, ga2), (gs1, gs2) = _velocity_cotangents(f, g_w1, g_w2, g_v1, g_v2)
            if j == n - 1:
                ga1, ga2 = ga1 + g_a1, ga2 + g_a2
            s1 = gated_step_vjp(c1, gates, f.dgd, gw1, None, gs1)
            g_eta, g_u1 = effective_eta_vjp(eta, u1, s1.eta, f.dgd)
            g_u1 = s1.u if g_u1 is None else s1.u + g_u1
            s2 = gated_step_vjp(c2, gates, f.dgd, gw2, None, gs2)
            g_eta2, g_k2 = effective_eta_vjp(eta, k2, s2.eta, f.dgd)
            g_k2 = s2.u if g_k2 is None else s2.u + g_k2
            ik, g_target, ia1, ia2 = inner_grads_vjp(ig, a1, a2, k2, f.act, f.dgd, g_u1, s1.e, s2.e, f.damping)
            g_m = l2norm_vjp(m, g_target) if f.unit_target else g_target
            mv, ma1, ma2 = memory_forward_vjp(a1, a2, v2_, g_m, f.act, mc)
            ga1, ga2 = ga1 + s1.w + ia1 + ma1, ga2 + s2.w + ia2 + ma2
            g_k = sum((g_k2 + ik).chunk(2))  # the key and value inputs were repeated for both memories
            g_v = g_vs[j] + sum(mv.chunk(2))
            g_kraw = l2norm_vjp(k_raw, g_ks[j] + g_k)
            g_kvin, ra1, ra2 = memory_forward_vjp(a1, a2, kv_[j], torch.cat([g_kraw, g_v]), f.act, kvc)
            ga1, ga2 = ga1 + ra1, ga2 + ra2
            g_w1, g_v1, gb1 = start_chunk_vjp(ctx.starts[j][0], beta_[j], f.momentum, ga1, g_v1)
            g_w2, g_v2, gb2 = start_chunk_vjp(ctx.starts[j][1], beta_[j], f.momentum, ga2, g_v2)
            acc["kv"].append(g_kvin)
            acc["eta"].append(g_eta + g_eta2)
            acc["beta"].append(gb1 + gb2 if f.momentum else None)
            for name, g in zip(_GATE_FIELDS, _sum_gate_grads((s1, s2))):
                acc[name].append(g)
        vec = [_stack(acc[name], -2) for name in ("eta", "eg", "egp", "eend", "elast")]
        mats = [_stack(acc[name], -3) for name in ("strict", "causal")]
        return (None, _stack(acc["kv"], -3), *vec, *mats, _stack(acc["beta"], -1),
                g_w1, g_w2, g_v1, g_v2)


def kv_chunks(k_in, v_in, eta, log_alpha, beta, state: MemoryState, chunk_size: int, f: Flags):
    """Key/value memories over whole chunks starting at a chunk boundary (the last one may be partial;
    ``f.self_target`` is ignored: these memories always generate their targets)."""
    momentum = f.momentum
    T = k_in.shape[-2]
    k_in, v_in = (_chunked(t, chunk_size, -2) for t in (k_in, v_in))
    eta, log_alpha, beta = (_chunked(t, chunk_size, -1) for t in (eta, log_alpha, beta))
    gates = ChunkGates.from_log_alpha(log_alpha)
    lead = k_in.shape[:-3]  # (B, H)
    mems = (2, *lead)  # the key and value memories become one flat axis of 2N
    k, v, *st = KVChunks.apply(
        f, _flat(torch.stack([k_in, v_in]), mems, 3),
        *(_flat(t, mems, 2) for t in (eta, gates.eg, gates.egp, gates.eend, gates.elast)),
        *(_flat(t, mems, 3) for t in (gates.strict, gates.causal)), _flat(beta[..., 0], mems, 1),
        *(_flat(t, mems, 2) for t in (state.w1, state.w2, state.v1, state.v2)))
    w1, w2, a1, a2, v1, v2 = (None if t is None else t.reshape(2, *lead, *t.shape[1:])
                              for t in (st if momentum else st + [None, None]))
    k, v = (t.reshape(*lead, -1, t.shape[-1])[..., :T, :] for t in (k, v))
    return k, v, MemoryState(w1, w2, a1, a2, v1, v2, T % chunk_size)
