"""The one driver of the DGD chunk algorithm: the sequential loop over chunks as an autograd Function with an
analytic backward, for the main memory and for the self-modifying key/value memories alike.

The forward walks the chunks once without building a graph and keeps, per chunk, the start weights, the anchors,
the incoming velocities and the token-level intermediates; the backward walks the chunks in reverse and
back-propagates each with the VJPs of :mod:`hope.ops.dgd.vjp`, carrying the cotangents of the state from chunk
to chunk. At the head sizes of the small presets the autograd graph of the unrolled loop (about 150 nodes per
chunk) cost more than the arithmetic; this is also the structure a fused kernel follows (hope/kernels/README.md).

Per chunk the driver computes what depends on the memory's MLP (keys and values of the key/value memories,
self-generated targets, layer inputs and error terms at the anchor, momentum, the velocity) and hands each
weight matrix's linear recurrence to a pluggable step (:mod:`hope.ops.dgd.step`: PyTorch, or the Triton
kernels). Everything that does not depend on the memory state is computed for all chunks at once before the
loop, under autograd: the gate products and, for the main memory's hidden layer (whose input is the key), the
inverse of the triangular system and the masked query-key product. A final partial chunk is padded with tokens
that change nothing (eta = 0, alpha = 1).

A step with a fused forward over all chunks (``chunks_forward``, :mod:`hope.ops.dgd.step`; the Triton step's
one-launch kernel) replaces the forward loop (unless it declines the call by returning None): the forward then
keeps only each chunk's start state, and the backward recomputes each chunk (:func:`_chunk_forward`, with the
step's per-chunk forward) right before back-propagating it, so only one chunk's intermediates live at a time;
a step that also has ``chunks_backward`` replaces that loop with one call (:func:`_fused_backward`) unless it
declines.

Flags: ``derive`` (the key/value memories: each chunk first reads its keys ``L2norm(M_k(k~))`` and values
``M_v(v~)`` from the anchors, and both memories then learn them; no read-out) and ``cont`` (the call starts
inside a chunk an earlier call left open: its first chunk continues from the state's weights and anchors,
without a momentum step, and the velocity collects the change from the state's weights).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from hope.ops.common import ChunkCalls, chunk_fn, l2norm
from hope.ops.dgd.common import (
    Flags,
    MemoryState,
    activation,
    activation_grad,
    anchor_products,
    collect_velocity,
    inner_grads,
    memory_forward,
    open_chunk,
)
from hope.ops.dgd.linear import ChunkGates, effective_eta, unit_lower_inverse
from hope.ops.dgd.step import TORCH_STEP, ChunkStep, StepHint
from hope.ops.dgd.vjp import inner_grads_vjp, l2norm_vjp, memory_forward_vjp, start_chunk_vjp

_GATE_FIELDS = ("eg", "egp", "eend", "elast", "strict", "causal")
# the per-chunk inputs of the Function, after the flags, in order; the token-level ones have a token axis
_TOKEN = ("x1", "x2", "q")
_MATRIX = ("strict", "causal", "tinv", "read")


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


def _stack(parts: list, dim: int) -> Tensor | None:
    """The per-chunk cotangents (collected in reverse) stacked on the chunk axis; None if no chunk had one."""
    parts = parts[::-1]
    ref = next((p for p in parts if p is not None), None)
    if ref is None:
        return None
    return torch.stack([torch.zeros_like(ref) if p is None else p for p in parts], dim)


def _add(a, b):
    return b if a is None else a if b is None else a + b


def _hints(chunk: dict, derive: bool) -> tuple[StepHint, StepHint]:
    """The step hints of the output layer (``W1``) and the hidden layer (``W2``) of one chunk."""
    gates = ChunkGates(*(chunk[n] for n in _GATE_FIELDS)) if chunk["eg"] is not None else None
    first = StepHint(gates=gates, log_alpha=chunk["log_alpha"])
    if derive:
        return first, first
    return first, StepHint(gates=gates, log_alpha=chunk["log_alpha"], eta_eff=chunk["eta_eff"],
                           tinv=chunk["tinv"], read=chunk["read"])


def _compiled_if_torch(fn, step: ChunkStep):
    """``fn`` through :func:`hope.ops.common.chunk_fn` (``HOPE_COMPILE_CHUNKS=1``: ``torch.compile``) for the PyTorch
    step; a plugged step (the Triton kernels, a test's) runs eagerly."""
    return chunk_fn(fn) if step is TORCH_STEP else fn


def _chunk_forward(f: Flags, derive: bool, step: ChunkStep, state, anchors, chunk: dict, beta, hints):
    """One chunk from ``state = (w1, w2, v1, v2)``; ``anchors``: the open chunk's anchors when it continues one
    (else the chunk opens: momentum, and the anchors are the new weights). Returns the chunk's outputs (the
    read-out, or the keys and values), the end state, the anchors and the intermediates of the backward."""
    w1, w2, v1, v2 = state
    if anchors is None:
        w1, w2, v1, v2 = open_chunk(w1, w2, v1, v2, beta, f.momentum)
        a1, a2 = w1, w2
    else:
        a1, a2 = anchors
    kvc, mc, ig, k_raw = {}, {}, {}, None
    q = chunk["q"]
    if derive:  # M_k(k~), M_v(v~) in one batched read; each memory then regresses M(k) onto its target of v
        k_raw, v_out = memory_forward(a1, a2, chunk["x1"], f.act, kvc).chunk(2)
        k_out = l2norm(k_raw)
        k, v = k_out.repeat(2, 1, 1), v_out.repeat(2, 1, 1)
    else:
        k, v = chunk["x1"], chunk["x2"]
    # the anchor MLP's products of the keys, of the values (self-generated targets) and of the queries (the
    # hidden layer's read-out, when W2 is the anchor) in one product per layer
    opened = anchors is None
    blocks, qa2 = anchor_products(a1, a2, [k, v] if f.self_target else [k], f.act, q if opened else None)
    if f.self_target:
        mc.update(z=blocks[1][0], h=blocks[1][1])
        m = v + blocks[1][2]
    else:
        m = None
    target = (l2norm(m) if f.unit_target else m) if f.self_target else v
    u1, e1, _, e2 = inner_grads(a1, a2, k, target, f.act, f.dgd, ig, f.damping, first=blocks[0])
    if opened:  # the steps' products with the start weights are the anchor's, computed above
        hints = (dataclasses.replace(hints[0], uw=blocks[0][2]), dataclasses.replace(hints[1], uw=blocks[0][0],
                                                                                     xw=qa2))
    w2e, y2, c2 = step.forward(w2, k, e2, q, chunk["eta"], f.dgd, hints[1])
    w1e, y1, c1 = step.forward(w1, u1, e1, None if q is None else activation(y2, f.act), chunk["eta"], f.dgd,
                               hints[0])
    if f.velocity_decay:  # the velocity collects the change of the weights over the chunk
        v1e, v2e = collect_velocity(v1, w1e, w1), collect_velocity(v2, w2e, w2)
    else:  # ... or only the steps sum_t c_t u_t^T (Titans Eq. 9-10)
        v1e, v2e = (None, None) if v1 is None else (v1 + step.steps(c1), v2 + step.steps(c2))
    outs = (k_out, v_out) if derive else (q + y1,)
    saved = (a1, a2, kvc, k_raw, k, v, m, mc, ig, y2, c1, c2)
    return outs, (w1e, w2e, v1e, v2e), (a1, a2), saved


def _chunk_backward(f: Flags, derive: bool, step: ChunkStep, saved, x1, g_outs, g_end):
    """Cotangents of one chunk's inputs given those of its outputs ``g_outs`` and end state ``g_end``: returns the
    token-level cotangents ``(x1, x2, q)``, the step's (raw ``eta`` and the hints' by name), and those of the
    start weights, the anchors and the incoming velocities."""
    a1, a2, kvc, k_raw, k, v, m, mc, ig, y2, c1, c2 = saved
    g_w1, g_w2, g_v1, g_v2 = g_end
    gs1 = gs2 = None
    gst1 = gst2 = 0  # the start weights' cotangents from the velocity
    if f.momentum and f.velocity_decay:  # V_end = V_in + W_end - W_start
        g_w1, g_w2, gst1, gst2 = g_w1 + g_v1, g_w2 + g_v2, -g_v1, -g_v2
    elif f.momentum:  # V_end = V_in + C^T U
        gs1, gs2 = g_v1, g_v2
    s1 = step.backward(c1, g_w1, None if derive else g_outs[0], gs1)
    s2 = step.backward(c2, g_w2, None if derive else s1.x * activation_grad(y2, f.act), gs2)
    g_k, g_target, ga1, ga2 = inner_grads_vjp(ig, a1, a2, k, f.act, f.dgd, s1.u, s1.e, s2.e, f.damping)
    g_k = g_k + s2.u
    if f.self_target:
        g_m = l2norm_vjp(m, g_target) if f.unit_target else g_target
        g_v, ma1, ma2 = memory_forward_vjp(a1, a2, v, g_m, f.act, mc)
        ga1, ga2 = ga1 + ma1, ga2 + ma2
    else:
        g_v = g_target
    if derive:  # the keys and values were read from the anchors and repeated for both memories
        g_kraw = l2norm_vjp(k_raw, g_outs[0] + sum(g_k.chunk(2)))
        g_vout = g_outs[1] + sum(g_v.chunk(2))
        g_x1, ra1, ra2 = memory_forward_vjp(a1, a2, x1, torch.cat([g_kraw, g_vout]), f.act, kvc)
        ga1, ga2 = ga1 + ra1, ga2 + ra2
        tok = (g_x1, None, None)
    else:
        tok = (g_k, g_v, g_outs[0] + s2.x)
    extra = dict(s1.extra)
    for name, g in s2.extra.items():
        extra[name] = _add(extra.get(name), g)
    return tok, _add(s1.eta, s2.eta), extra, (s1.w + gst1, s2.w + gst2), (ga1, ga2), (g_v1, g_v2)


def _chunk_backward_opened(f: Flags, derive: bool, step: ChunkStep, saved, x1, g_outs, g_end, g_last, v_in, beta,
                           opens: bool):
    """:func:`_chunk_backward`, then (``opens``: the chunk opened, it did not continue an earlier call's) the VJP
    of its opening, where the start weights and the anchors are the opened weights. ``g_last``: cotangents added
    to the anchors' (those of the driver's output anchors for the last chunk, else zeros); ``v_in``: the incoming
    velocities. Returns the token-level cotangents, the step's (raw ``eta``, the hints' by name), those of the
    state before the chunk ``(w1, w2, v1, v2)``, of ``beta`` and (not ``opens``) of the input anchors."""
    tok, g_eta, extra, g_start, g_anchor, g_vin = _chunk_backward(f, derive, step, saved, x1, g_outs, g_end)
    g_anchor = (g_anchor[0] + g_last[0], g_anchor[1] + g_last[1])
    if not opens:
        return tok, g_eta, extra, (*g_start, *g_vin), None, g_anchor
    g_w1, g_v1, gb1 = start_chunk_vjp(v_in[0], beta, f.momentum, g_start[0] + g_anchor[0], g_vin[0])
    g_w2, g_v2, gb2 = start_chunk_vjp(v_in[1], beta, f.momentum, g_start[1] + g_anchor[1], g_vin[1])
    return tok, g_eta, extra, (g_w1, g_w2, g_v1, g_v2), gb1 + gb2 if f.momentum else None, None


def _chunk_saved(ctx, j: int):
    """Chunk ``j``'s intermediates for its backward: kept by the forward, or (after a fused forward) recomputed
    from its saved start state with the step's per-chunk forward."""
    if ctx.saved is not None:
        return ctx.saved[j]
    chunk = ctx.chunks[j]
    anchors = ctx.anchors if j == 0 else None
    chunk_forward = _compiled_if_torch(_chunk_forward, ctx.step)
    return chunk_forward(ctx.f, ctx.derive, ctx.step, ctx.states[j], anchors, chunk, ctx.betas[j],
                         _hints(chunk, ctx.derive))[3]


def _fused_backward(ctx, g_outs, g_end, g_anchors) -> tuple | None:
    """:meth:`DGDChunks.backward`'s result from the step's backward over all chunks (``chunks_backward``,
    :mod:`hope.ops.dgd.step`) after its fused forward; None when there is none or it declines (the loop runs)."""
    fused = getattr(ctx.step, "chunks_backward", None)
    if ctx.saved is not None or fused is None:
        return None
    *inputs, starts = ctx.fused
    r = fused(ctx.f, ctx.derive, ctx.cont, *inputs, starts, ctx.anchors, g_outs, g_end, g_anchors)
    if r is None:
        return None
    out = [r.inputs.get(name) if name in ctx.present else None for name in ctx.given]
    return (None, None, None, None, *out, r.inputs.get("beta"), *r.state, *r.anchors)


class DGDChunks(torch.autograd.Function):
    """The chunk loop over chunked inputs ``(N, n_chunks, C, ...)`` (see the module docstring for the flags)."""

    @staticmethod
    def forward(ctx, f: Flags, derive: bool, cont: bool, step: ChunkStep, x1, x2, q, eta, log_alpha, eta_eff, eg,
                egp, eend, elast, strict, causal, tinv, read, beta, w1, w2, v1, v2, a1, a2):
        named = dict(x1=x1, x2=x2, q=q, eta=eta, log_alpha=log_alpha, eta_eff=eta_eff, eg=eg, egp=egp, eend=eend,
                     elast=elast, strict=strict, causal=causal, tinv=tinv, read=read)
        n = x1.shape[-3]
        # unbind: one backward node stacks the chunks' gradients (indexing chunk by chunk would write a
        # full-size zero gradient per chunk)
        per = {name: [None] * n if t is None else t.unbind(-3 if name in _TOKEN + _MATRIX else -2)
               for name, t in named.items()}
        chunks = [{name: per[name][j] for name in named} for j in range(n)]
        betas = beta.unbind(-1)
        # detached: the inputs keep requires_grad inside forward, the later chunks' states do not (one compiled
        # graph for both under HOPE_COMPILE_CHUNKS; the backward is hand-written, so nothing is lost)
        w1, w2, v1, v2, a1, a2 = (None if t is None else t.detach() for t in (w1, w2, v1, v2, a1, a2))
        anchors = (a1, a2) if cont else None
        fused = getattr(step, "chunks_forward", None)
        r = None if fused is None else fused(f, derive, cont, x1, x2, q, eta, log_alpha, beta, (w1, w2, v1, v2),
                                             anchors)
        ctx.states = ctx.anchors = None
        if r is None:
            state, starts, saved, outs = (w1, w2, v1, v2), [], [], []
            chunk_forward = _compiled_if_torch(_chunk_forward, step)
            with ChunkCalls() as calls:
                for j, chunk in enumerate(chunks):
                    starts.append(state[2:])  # the incoming velocities (for beta's gradient)
                    hints = _hints(chunk, derive)
                    calls.before(j)
                    out, state, last, s = chunk_forward(f, derive, step, state, anchors if j == 0 else None, chunk,
                                                        betas[j], hints)
                    outs.append(out)
                    saved.append(s)
            outs = [torch.stack(o, -3) for o in zip(*outs)]
        else:  # one call over all chunks; the backward recomputes each chunk from its start state
            outs, state, last, saved = r.outs, r.end, r.anchors, None
            ctx.states = list(zip(*([None] * n if t is None else t.unbind(1) for t in r.starts)))
            ctx.anchors = anchors
            starts = [s[2:] for s in ctx.states]
            ctx.fused = (x1, x2, q, eta, log_alpha, beta, r.starts)  # for the step's fused backward
        ctx.f, ctx.derive, ctx.cont, ctx.step = f, derive, cont, step
        ctx.starts, ctx.saved, ctx.chunks, ctx.betas, ctx.given = starts, saved, chunks, betas, named.keys()
        ctx.present = {name for name, t in named.items() if t is not None}
        # the anchors are also in ctx.saved: returning them uncloned would make a cycle (output -> node -> ctx)
        result = (*outs, state[0], state[1], *(a.clone() for a in last))
        return result + ((state[2], state[3]) if f.momentum else ())

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        f, derive, step = ctx.f, ctx.derive, ctx.step
        n_out = 2 if derive else 1
        g_outs = [g.unbind(-3) for g in grads[:n_out]]
        g_w1, g_w2, g_a1, g_a2 = grads[n_out:n_out + 4]
        g_v1, g_v2 = grads[n_out + 4:] if f.momentum else (None, None)
        fused = _fused_backward(ctx, grads[:n_out], (g_w1, g_w2, g_v1, g_v2), (g_a1, g_a2))
        if fused is not None:
            return fused
        n = len(ctx.chunks)
        acc: dict[str, list] = {name: [] for name in (*ctx.given, "beta")}
        g_anchor_in = (None, None)
        chunk_backward = _compiled_if_torch(_chunk_backward_opened, step)
        zeros = (torch.zeros_like(g_a1), torch.zeros_like(g_a2))  # (autograd materializes unused outputs' zeros)
        with ChunkCalls() as calls:
            for j in reversed(range(n)):
                chunk = ctx.chunks[j]
                g_last = (g_a1, g_a2) if j == n - 1 else zeros
                opens = not (j == 0 and ctx.cont)  # else the start weights, anchors and velocity are the inputs'
                saved = _chunk_saved(ctx, j)
                calls.before(n - 1 - j, outside_inputs=j == 0)
                tok, g_eta, extra, g_state, g_beta, g_anchor = chunk_backward(
                    f, derive, step, saved, chunk["x1"], [g[j] for g in g_outs], (g_w1, g_w2, g_v1, g_v2), g_last,
                    ctx.starts[j], ctx.betas[j], opens)
                g_w1, g_w2, g_v1, g_v2 = g_state
                for name, g in zip(_TOKEN, tok):
                    acc[name].append(g)
                acc["eta"].append(g_eta)
                for name in ("log_alpha", "eta_eff", *_GATE_FIELDS, "tinv", "read"):
                    acc[name].append(extra.get(name))
                acc["beta"].append(g_beta)
                if not opens:
                    g_anchor_in = g_anchor
        out = []
        for name in ctx.given:
            dim = -3 if name in _TOKEN + _MATRIX else -2
            out.append(_stack(acc[name], dim) if name in ctx.present else None)
        beta = _stack(acc["beta"], -1)
        return (None, None, None, None, *out, beta, g_w1, g_w2, g_v1, g_v2, *g_anchor_in)


def _prepare(derive: bool, uses_gates: bool, dgd: bool, size: int, lead: tuple[int, ...], x1, x2, q, eta, log_alpha,
             beta) -> list[Tensor | None]:
    """:class:`DGDChunks`' inputs from ``(x1, x2, q)`` and the gates: chunked (``size`` tokens), flattened over
    ``lead`` and, for a step that reads them (``uses_gates``), with what does not depend on the memory state
    computed for all chunks at once (compiled with the per-chunk functions: one fused graph and its backward)."""
    x1, x2, q = (None if t is None else _chunked(t, size, -2) for t in (x1, x2, q))
    eta, log_alpha, beta = (_chunked(t, size, -1) for t in (eta, log_alpha, beta))  # padding: no-op tokens
    gates = ChunkGates.from_log_alpha(log_alpha) if uses_gates else None
    eta_eff = tinv = read = None
    if uses_gates and not derive:  # the hidden layer's input is the key: state independent
        eta_eff = effective_eta(eta, x1, dgd)
        if dgd:
            # one solve for all chunks under autograd (by blocks only in the steps, whose VJP is hand-written)
            lower = eta_eff[..., :, None] * gates.strict * (x1 @ x1.transpose(-1, -2))
            tinv = unit_lower_inverse(lower, blocked=False)
        read = gates.causal * (q @ x1.transpose(-1, -2))
    fields = [None] * 6 if gates is None else [gates.eg, gates.egp, gates.eend, gates.elast, gates.strict,
                                               gates.causal]
    la = None if uses_gates else log_alpha
    vec = [_flat(t, lead, 2) for t in (eta, la, eta_eff, *fields[:4])]
    mat = [_flat(t, lead, 3) for t in (*fields[4:], tinv, read)]
    return [*(_flat(t, lead, 3) for t in (x1, x2, q)), *vec, *mat, _flat(beta[..., 0], lead, 1)]


def _run(derive: bool, x1, x2, q, eta, log_alpha, beta, state: MemoryState, lead, chunk_size: int, f: Flags,
         step: ChunkStep):
    """Chunk, precompute and flatten the inputs, run :class:`DGDChunks` and unflatten its results.

    ``lead``: the leading dims of the state (``(B, H)``, or ``(2, B, H)`` for the key/value memories). A call
    that fits in one chunk uses its own length as the chunk (no padding); one that continues an open chunk
    must end inside it or at its end."""
    T = x1.shape[-2]
    cont = state.offset > 0
    assert not cont or state.offset + T <= chunk_size, "a continued chunk is run on its own"
    size = T if cont or T <= chunk_size else chunk_size
    prepare = _compiled_if_torch(_prepare, step)
    inputs = prepare(derive, step.uses_gates, f.dgd, size, lead, x1, x2, q, eta, log_alpha, beta)
    anchors = (state.a1, state.a2) if cont else (None, None)
    res = DGDChunks.apply(f, derive, cont, step, *inputs,
                          *(_flat(t, lead, 2) for t in (state.w1, state.w2, state.v1, state.v2, *anchors)))
    n_out = 2 if derive else 1
    st = list(res[n_out:]) + ([] if f.momentum else [None, None])
    w1, w2, a1, a2, v1, v2 = (None if t is None else t.reshape(*lead, *t.shape[1:]) for t in st)
    return res[:n_out], MemoryState(w1, w2, a1, a2, v1, v2, (state.offset + T) % chunk_size)


def _calls(T: int, offset: int, chunk_size: int) -> list[tuple[int, int]]:
    """The token ranges of a call run as separate chunk loops: the rest of an open chunk, then the others."""
    head = min(T, (chunk_size - offset) % chunk_size)
    return [r for r in ((0, head), (head, T)) if r[1] > r[0]]


def memory_chunks(k, v, q, eta, log_alpha, beta, state: MemoryState, chunk_size: int, f: Flags,
                  step: ChunkStep = TORCH_STEP) -> tuple[Tensor, MemoryState]:
    """The main memory over a call's tokens, from ``state`` (a chunk an earlier call left open is continued)."""
    lead, outs = k.shape[:-2], []
    for s, e in _calls(k.shape[-2], state.offset, chunk_size):
        tok = [t[..., s:e, :] for t in (k, v, q)]
        vec = [t[..., s:e] for t in (eta, log_alpha, beta)]
        (out,), state = _run(False, *tok, *vec, state, lead, chunk_size, f, step)
        outs.append(out.reshape(*lead, -1, out.shape[-1])[..., :e - s, :])
    return torch.cat(outs, -2), state


def kv_chunks(k_in, v_in, eta, log_alpha, beta, state: MemoryState, chunk_size: int, f: Flags,
              step: ChunkStep = TORCH_STEP) -> tuple[Tensor, Tensor, MemoryState]:
    """The key/value memories over a call's tokens (they always generate their targets: ``f.self_target`` is
    ignored); returns the keys, the values and the state."""
    lead = k_in.shape[:-2]  # (B, H)
    mems = (2, *lead)  # the key and value memories become one flat axis of 2N
    f = dataclasses.replace(f, self_target=True)
    ks, vs = [], []
    for s, e in _calls(k_in.shape[-2], state.offset, chunk_size):
        x = torch.stack([k_in[..., s:e, :], v_in[..., s:e, :]])
        vec = [t[..., s:e] for t in (eta, log_alpha, beta)]
        (k, v), state = _run(True, x, None, None, *vec, state, mems, chunk_size, f, step)
        ks.append(k.reshape(*lead, -1, k.shape[-1])[..., :e - s, :])
        vs.append(v.reshape(*lead, -1, v.shape[-1])[..., :e - s, :])
    return torch.cat(ks, -2), torch.cat(vs, -2), state
