"""Analytic work and memory of a configuration: matmul FLOPs per token (forward and backward) and bytes per
sequence.

FLOPs are counted as :class:`torch.utils.flop_counter.FlopCounterMode` counts them (``2 m n k`` per matrix
product; elementwise work is not counted), for what the ``chunk`` backend executes: the SMT memories' per-chunk
forward and hand-written backward (:mod:`hope.ops.dgd.chunk_loop`, chunk-form overheads such as the masked
``C x C`` products and the triangular solves included; a final partial chunk is padded), the CMS levels'
chunk loop with its Hessian-vector backward (:mod:`hope.ops.cms.chunk_loop`; the cheaper backward of
``cms_first_order``), the projections and attention, counted dense as SDPA's kernels are by
:func:`torch.utils.flop_counter.sdpa_flop_count` (full ``T x T``; the backward recomputes the scores); the SMT
mixer's causal depthwise convolution is elementwise work (shifted products), not counted.
Ops that ``FlopCounterMode`` does not know, or miscounts, get formulas here (:func:`counter_formulas`): the
triangular solve (``n^2 k`` for an ``n x n`` system with ``k`` right-hand sides) and the CPU flash-attention
kernels. ``tests/test_flops.py`` checks :func:`flops_per_token`
against the counter. Sequences are counted from the start of a stream (no chunk left open by an earlier call).

Memory (:func:`memory_per_sequence`): the fast state of :func:`hope.config.fast_state_bytes` and the bytes the
backward keeps, counted by walking the autograd graph on fake tensors (:func:`saved_bytes`).
"""

from __future__ import annotations

import dataclasses
import math

from hope.config import HopeConfig, fast_state_bytes
from hope.ops.dgd.linear import INVERSE_BLOCKED_ABOVE, INVERSE_LEAF


@dataclasses.dataclass
class Flops:
    """FLOPs of the forward and of the backward (autograd's and the hand-written ones)."""

    forward: float = 0.0
    backward: float = 0.0

    @property
    def total(self) -> float:
        return self.forward + self.backward

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.forward + other.forward, self.backward + other.backward)

    def __mul__(self, k: float) -> Flops:
        return Flops(self.forward * k, self.backward * k)

    __rmul__ = __mul__


def dense(n_in: int, n_out: int) -> Flops:
    """A linear map per token: ``2 n_in n_out`` forward, twice that backward (input and weight gradients)."""
    return Flops(2 * n_in * n_out, 4 * n_in * n_out)


def _mm(m: int, n: int, k: int) -> float:
    return 2.0 * m * n * k


def _solve(n: int, k: int) -> float:
    """A unit-triangular ``n x n`` solve with ``k`` right-hand sides (the formula of :func:`counter_formulas`)."""
    return float(n * n * k)


def _inverse(n: int) -> float:
    """:func:`hope.ops.dgd.linear.unit_lower_inverse` of an ``n x n`` system in a step: one solve with ``n``
    right-hand sides, or by blocks above ``INVERSE_BLOCKED_ABOVE`` rows (two products per split)."""
    return _solve(n, n) if n <= INVERSE_BLOCKED_ABOVE else _blocked_inverse(n)


def _blocked_inverse(n: int) -> float:
    if n <= INVERSE_LEAF:
        return _solve(n, n)
    h = n // 2
    return _blocked_inverse(h) + _blocked_inverse(n - h) + _mm(n - h, h, h) + _mm(n - h, h, n - h)


def memory_chunk_flops(n: int, d: int, h: int, *, dgd: bool = True, self_target: bool = True) -> Flops:
    """The main memory over one chunk of ``n`` tokens for one head (``d`` head width, ``h`` hidden width):
    :func:`hope.ops.dgd.chunk_loop.memory_chunks`, the products it computes before the loop included."""
    m, nnd, nnh = _mm(n, d, h), _mm(n, n, d), _mm(n, n, h)
    fwd = 3 * m + 2 * m  # inner_grads at the anchor (W2 k, W1 s(z), r W1); both end states
    fwd += 2 * m + nnh + nnh + nnd  # read-outs: W x per layer, layer 1's x u^T, (x u^T) C per layer
    bwd = 6 * m  # inner_grads
    bwd += 4 * m + 2 * nnd + 2 * nnh  # layer 1 (input s(z)): end state and read-out
    bwd += 4 * m + 2 * nnh  # layer 2 (input k; masked q k^T given)
    pre = Flops(nnd, 2 * nnd)  # q k^T for all chunks before the loop
    if dgd:
        fwd += _mm(n, h, 1) + nnh + nnh + _inverse(n) + nnd  # damping, T^-1 R, U U^T, inverse, T_1^-1 R_1
        bwd += 2 * m + nnd + nnd + 2 * nnh  # layer 1: W u terms, T_1^-T dC, dL/dL, dL/dU (L and L^T)
        bwd += 2 * m + 2 * nnh  # layer 2: W u terms, the gradients of T^-1 and R
        pre += Flops(nnd + _solve(n, n), 2 * nnd + _solve(n, n) + _mm(n, n, n))  # k k^T and T^-1 = (I + L)^-1
    if self_target:
        fwd += 2 * m  # M_0(v)
        bwd += 4 * m
    return Flops(fwd, bwd) + pre


def kv_chunk_flops(n: int, d: int, h: int, *, dgd: bool = True) -> Flops:
    """One of the key/value memories over one chunk of ``n`` tokens for one head:
    :func:`hope.ops.dgd.chunk_loop.kv_chunks` (no read-out; keys and targets from the anchor)."""
    m, nnd, nnh = _mm(n, d, h), _mm(n, n, d), _mm(n, n, h)
    fwd = 2 * m + 2 * m + 3 * m + 2 * m  # M_0(input), M_0(v), inner_grads, both end states
    bwd = 4 * m + 6 * m + 8 * m  # both end states, inner_grads, both memory reads
    if dgd:
        fwd += _mm(n, h, 1) + nnd + nnh + 2 * _inverse(n) + nnh + nnd  # damping, U U^T, inverses, T^-1 R
        bwd += 4 * m + nnd + nnh + 2 * nnd + 2 * nnh + nnd + nnh  # W u terms, T^-T dC, dL/dL, dL/dU (L, L^T)
    return Flops(fwd, bwd)


def cms_level_flops(dim: int, hidden: int, chunk_size: int | None, seq_len: int, *,
                    first_order: bool = False) -> Flops:
    """One CMS level per token (SwiGLU of width ``hidden``). In context: the key and value projections, the
    whole-chunk loop (per chunk the read-out of inputs and keys, the summed gradient and, exact, its
    Hessian-vector backward) and a final partial chunk under autograd."""
    df = dim * hidden
    if chunk_size is None:
        return Flops(6 * df, 12 * df)
    # the value projection is back-propagated only once a step is taken (the keys share the read-out's product)
    proj = Flops(4 * dim * dim, 0 if first_order else (8 if seq_len >= chunk_size else 4) * dim * dim)
    full = (seq_len // chunk_size) * chunk_size / seq_len
    tail = 1 - full
    whole = Flops(20 * df, 12 * df if first_order else 40 * df)  # fwd: 12 read-out (2C rows) + 8 gradient
    part = Flops(20 * df, 24 * df)  # the tail segment: autograd through its (2n-row) read-out only
    return proj + whole * full + part * tail


def flops_per_token(cfg: HopeConfig, seq_len: int, causal: bool = False) -> dict[str, Flops]:
    """Matmul FLOPs per token of a training step's forward and backward, by part of the model.

    ``causal=True`` counts attention's score and value products over the ``T (T + 1) / 2`` causal pairs only
    (the useful work, which a causal flash kernel comes close to); the default counts them dense, as
    ``FlopCounterMode`` does."""
    D, H, d, h, L = cfg.dim, cfg.n_heads, cfg.head_dim, cfg.memory_hidden, cfg.n_layers
    parts: dict[str, Flops] = {"lm_head": dense(D, cfg.vocab_size)}
    if cfg.mixer == "attention":
        parts["mixer projections"] = (dense(D, 3 * D) + dense(D, D)) * L
        pairs = (seq_len + 1) / 2 if causal else seq_len  # keys per query
        parts["attention"] = Flops(4 * pairs * D, 10 * pairs * D) * L
    else:
        parts["mixer projections"] = (dense(D, 3 * D) + dense(D, 3 * H) + dense(D, D) * 2) * L
        padded = lambda c: math.ceil(seq_len / c) * c / seq_len  # noqa: E731  (partial chunks are padded)
        smt = cfg.mixer == "smt"
        mem = memory_chunk_flops(cfg.chunk_memory, d, h, dgd=cfg.dgd, self_target=smt)
        parts["memory"] = mem * (H * L * padded(cfg.chunk_memory) / cfg.chunk_memory)
        if smt:
            kv = kv_chunk_flops(cfg.chunk_other, d, h, dgd=cfg.dgd)
            parts["key/value memories"] = kv * (2 * H * L * padded(cfg.chunk_other) / cfg.chunk_other)
    for c in cfg.cms_chunk_sizes:
        key = "CMS static" if c is None else "CMS in-context"
        level = cms_level_flops(D, cfg.cms_hidden, c, seq_len, first_order=cfg.cms_first_order) * L
        parts[key] = parts.get(key, Flops()) + level
    return parts


def total_flops_per_token(cfg: HopeConfig, seq_len: int, causal: bool = False) -> Flops:
    """The sum of :func:`flops_per_token`."""
    return sum(flops_per_token(cfg, seq_len, causal).values(), Flops())


def counter_formulas() -> dict:
    """``FlopCounterMode(custom_mapping=...)`` formulas for ops it does not count: the triangular solve
    (``n^2 k``) and the CPU flash-attention kernels (with torch's own SDPA formulas)."""
    import torch
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def solve(a_shape, b_shape, *args, out_shape=None, left=True, **kwargs) -> int:
        n, k = a_shape[-1], (b_shape[-1] if left else b_shape[-2])
        return math.prod(out_shape[:-2]) * n * n * k

    def attention(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(q_shape, k_shape, v_shape)

    def attention_backward(g_shape, q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(g_shape, q_shape, k_shape, v_shape)

    return {aten.linalg_solve_triangular: solve, aten._scaled_dot_product_flash_attention_for_cpu: attention,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: attention_backward}


def count_flops(fn, *args, **kwargs) -> tuple[float, object]:
    """``(FLOPs, result)`` of ``fn(*args, **kwargs)`` measured by ``FlopCounterMode`` with :func:`counter_formulas`."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=counter_formulas()) as counter:
        out = fn(*args, **kwargs)
    return float(counter.get_total_flops()), out


def saved_bytes(output, exclude=()) -> int:
    """Bytes of the distinct tensor storages that the autograd graph of ``output`` keeps for its backward
    (autograd's saved tensors and what the hand-written Functions keep on their context), not counting the
    storages of ``exclude`` (e.g. the model's parameters). Measured before the backward runs."""
    import torch

    skip = {t.untyped_storage()._cdata for t in exclude}
    storages: dict[int, int] = {}

    def collect(obj, depth=0):
        if isinstance(obj, torch.Tensor):
            st = obj.untyped_storage()
            if st._cdata not in skip and st.nbytes():  # _cdata: the storage's identity (also on the meta device)
                storages[st._cdata] = st.nbytes()
        elif isinstance(obj, (list, tuple)):
            for o in obj:
                collect(o, depth + 1)
        elif isinstance(obj, dict):
            for o in obj.values():
                collect(o, depth + 1)
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            for f in dataclasses.fields(obj):
                collect(getattr(obj, f.name), depth + 1)

    stack, seen = [output.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for name in dir(node):
            if name.startswith("_saved_"):
                try:
                    collect(getattr(node, name))
                except RuntimeError:  # a saved value that is not a tensor
                    pass
        collect(getattr(node, "__dict__", {}))
        stack.extend(nxt for nxt, _ in node.next_functions)
    return sum(storages.values())


def _counted_saved_bytes(cfg: HopeConfig, seq_len: int) -> tuple[int, int]:
    """``(one block, output head and loss)``: bytes kept for the backward of one sequence, counted with
    :func:`saved_bytes` on fake tensors (nothing is computed or allocated)."""
    import torch
    import torch.nn.functional as F
    from torch._subclasses.fake_tensor import FakeTensorMode

    from hope.model import HopeBlock

    with FakeTensorMode(allow_non_fake_inputs=True):
        block = HopeBlock(dataclasses.replace(cfg, backend="chunk"))
        x = torch.randn(1, seq_len, cfg.dim, requires_grad=True)
        y, _ = block(x)
        n_block = saved_bytes(y, [*block.parameters(), x])
        norm, head = torch.nn.RMSNorm(cfg.dim, eps=cfg.norm_eps), torch.nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        loss = F.cross_entropy(head(norm(x))[0], torch.zeros(seq_len, dtype=torch.long))
        n_head = saved_bytes(loss, [*norm.parameters(), *head.parameters(), x])
    return n_block, n_head


def memory_per_sequence(cfg: HopeConfig, seq_len: int = 4096) -> dict[str, float]:
    """Bytes per sequence of a training step at ``seq_len`` (fp32):

    ``fast_state`` and ``chunk_states_per_layer`` from :func:`hope.config.fast_state_bytes`; ``saved_per_layer``:
    everything one block's backward keeps (its chunk states included); ``activations``: what the whole model
    keeps without checkpointing; ``activations_checkpointed``: with per-block activation checkpointing (the
    block inputs, one block's saved tensors and the output head's). The saved tensors are counted on fake
    tensors at two lengths that are multiples of every chunk size and extrapolated linearly (they are affine
    in the length there)."""
    step = max([cfg.chunk_memory, cfg.chunk_other, *(c for c in cfg.cms_chunk_sizes if c is not None)])
    (b1, h1), (b2, h2) = _counted_saved_bytes(cfg, step), _counted_saved_bytes(cfg, 2 * step)
    block = b1 + (b2 - b1) * (seq_len - step) / step
    head = h1 + (h2 - h1) * (seq_len - step) / step
    state = fast_state_bytes(cfg, seq_len)
    return {"fast_state": state["state"], "chunk_states_per_layer": state["chunk_states"], "saved_per_layer": block,
            "activations": cfg.n_layers * block + head,
            "activations_checkpointed": cfg.n_layers * seq_len * cfg.dim * 4 + block + head}
