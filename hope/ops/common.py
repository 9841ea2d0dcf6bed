"""Helpers shared by every chunked op."""

from __future__ import annotations

import functools
import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor

#: ``HOPE_COMPILE_CHUNKS=1`` runs the per-chunk functions of the CMS and DGD chunk loops through ``torch.compile``
#: (opt-in; one graph per input shape, compiled on first use and cached by torch).
COMPILE_ENV = "HOPE_COMPILE_CHUNKS"


@functools.cache
def _compiled(fn):
    # cpp_wrapper: the compiled graph's kernel calls run from C++, not Python (the chunk loops call each graph
    # once per chunk, and their graphs launch a few dozen small kernels)
    return torch.compile(fn, dynamic=False, options={"cpp_wrapper": True})


#: graphs one compiled chunk function may keep (at least): one per input shape and flag combination, so a process
#: that runs several presets or batch shapes passes Dynamo's default ``recompile_limit`` of 8 per function. Past
#: the limit Dynamo runs the function eagerly, and a loop whose calls skip the guards (:class:`ChunkCalls`) fails.
CHUNK_GRAPHS = 64


def chunk_fn(fn):
    """``fn``, or its ``torch.compile`` d version when ``HOPE_COMPILE_CHUNKS=1`` (read at each call; compiled with
    Inductor's C++ wrapper, cached per shape; Dynamo's ``recompile_limit`` is raised to ``CHUNK_GRAPHS``)."""
    if os.environ.get(COMPILE_ENV) != "1":
        return fn
    if torch._dynamo.config.recompile_limit < CHUNK_GRAPHS:
        torch._dynamo.config.recompile_limit = CHUNK_GRAPHS
    return _compiled(fn)


class ChunkCalls:
    """The calls of one chunk loop to a :func:`chunk_fn` function; :meth:`before` precedes each call.

    The first two calls, and one whose inputs come from outside the loop (``outside_inputs``: the first chunk's
    start state in a backward), check every guard; the others get inputs out of the same graph as the call
    before, with its shapes, strides and types, and with ``HOPE_COMPILE_CHUNKS=1`` Dynamo checks only the guards
    that tell its cached graphs apart (``skip_guard_eval_unsafe``, about 0.1 ms per chunk at the tiny presets).
    The stance changes only where the rule does (a context per call cost about 5% of a titans-tiny memory op);
    leaving the ``with`` block restores it."""

    def __init__(self) -> None:
        self._compiled = os.environ.get(COMPILE_ENV) == "1"
        self._stance = None

    def before(self, calls_before: int, outside_inputs: bool = False) -> None:
        unchecked = self._compiled and calls_before >= 2 and not outside_inputs
        if unchecked and self._stance is None:
            self._stance = torch.compiler.set_stance(skip_guard_eval_unsafe=True)
            self._stance.__enter__()
        elif not unchecked:
            self.close()

    def close(self) -> None:
        if self._stance is not None:
            stance, self._stance = self._stance, None
            stance.__exit__(None, None, None)

    def __enter__(self) -> ChunkCalls:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sum_of_products(terms: list[tuple[Tensor, Tensor]], left_transposed: bool = False) -> Tensor:
    """``sum_i a_i @ b_i`` as one product of the concatenations, ``[a_1 ... a_n] @ [b_1; ...; b_n]``
    (``left_transposed``: ``sum_i a_i^T @ b_i``, the ``a_i`` stacked along their rows and the result's left
    factor transposed, so that no concatenation writes a transposed block).

    The chunk loops' products are small (tens of rows): there one ``bmm`` over the joint inner dimension costs
    less than ``n`` products and ``n - 1`` additions. The operands must share their batch dims (no broadcasting).
    """
    if left_transposed:
        a = terms[0][0] if len(terms) == 1 else torch.cat([a for a, _ in terms], -2)
        return a.transpose(-1, -2) @ (terms[0][1] if len(terms) == 1 else torch.cat([b for _, b in terms], -2))
    if len(terms) == 1:
        return terms[0][0] @ terms[0][1]
    return torch.cat([a for a, _ in terms], -1) @ torch.cat([b for _, b in terms], -2)


def segments(length: int, offset: int, chunk_size: int) -> list[tuple[int, int]]:
    """Split ``[0, length)`` at chunk boundaries, given ``offset`` tokens already in the current chunk."""
    bounds, start = [], 0
    while start < length:
        end = min(length, start + chunk_size - offset)
        bounds.append((start, end))
        offset = (offset + end - start) % chunk_size
        start = end
    return bounds


def l2norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Normalize the last dimension to unit L2 norm."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


#: ``gelu_tanh`` is the tanh approximation of GELU (GPT-2's ``gelu_new``, ``gelu_pytorch_tanh``).
ACTIVATIONS = ("silu", "gelu", "gelu_tanh")
_GELU_C, _GELU_A = math.sqrt(2 / math.pi), 0.044715


def _tanh_gelu_parts(x: Tensor) -> tuple[Tensor, Tensor]:
    """``t = tanh(c (x + a x^3))`` of tanh-GELU ``0.5 x (1 + t)`` and its derivative ``dt/dx``."""
    t = torch.tanh(_GELU_C * (x + _GELU_A * x * x * x))
    return t, (1 - t * t) * _GELU_C * (1 + 3 * _GELU_A * x * x)


def activation(x: Tensor, act: str) -> Tensor:
    """The memory non-linearity ``s``."""
    if act == "silu":
        return F.silu(x)
    if act == "gelu":
        return F.gelu(x)
    if act == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    raise ValueError(f"unknown memory activation {act!r}; expected one of {ACTIVATIONS}")


def silu_grad(x: Tensor, sig: Tensor) -> Tensor:
    """``silu'(x)`` from ``sig = sigmoid(x)`` when the caller has it already."""
    return sig * (1 + x * (1 - sig))


def silu_grad2(x: Tensor, sig: Tensor) -> Tensor:
    """``silu''(x)`` from ``sig = sigmoid(x)``."""
    return sig * (1 - sig) * (2 + x * (1 - 2 * sig))


def activation_grad(x: Tensor, act: str) -> Tensor:
    """The derivative ``s'(x)``, written out so the inner gradient needs no autograd."""
    if act == "silu":
        return silu_grad(x, torch.sigmoid(x))
    if act == "gelu":
        cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
        pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return cdf + x * pdf
    if act == "gelu_tanh":
        t, dt = _tanh_gelu_parts(x)
        return 0.5 * (1 + t) + 0.5 * x * dt
    raise ValueError(f"unknown memory activation {act!r}; expected one of {ACTIVATIONS}")


def activation_grad2(x: Tensor, act: str) -> Tensor:
    """The second derivative ``s''(x)`` (the inner gradient's slope is differentiated in the outer backward)."""
    if act == "silu":
        return silu_grad2(x, torch.sigmoid(x))
    if act == "gelu":
        pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return pdf * (2 - x * x)
    if act == "gelu_tanh":
        t, dt = _tanh_gelu_parts(x)
        d2t = -2 * t * dt * _GELU_C * (1 + 3 * _GELU_A * x * x) + (1 - t * t) * _GELU_C * 6 * _GELU_A * x
        return dt + 0.5 * x * d2t
    raise ValueError(f"unknown memory activation {act!r}; expected one of {ACTIVATIONS}")
