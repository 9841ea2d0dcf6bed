"""Chunk-parallel DGD on MLP memories: the CPU path and the driver of the Triton kernels.

Inside a chunk all keys, targets, layer inputs and error terms come from the anchor (the chunk-start state,
paper Eq. 91), so each weight matrix follows a linear recurrence solved in parallel over the chunk
(:mod:`hope.ops.dgd.linear`); the chunks run in sequence in one driver with an analytic backward
(:mod:`hope.ops.dgd.chunk_loop`), whose per-chunk step is pluggable (:mod:`hope.ops.dgd.step`: PyTorch here,
the Triton kernels in ``hope.kernels.dgd.op``). A call that starts inside a chunk an earlier call left open
continues it (the driver's ``cont`` flag), so streaming needs no second code path.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hope.ops.dgd.chunk_loop import kv_chunks, memory_chunks
from hope.ops.dgd.common import Flags, MemoryState, check_inputs
from hope.ops.dgd.step import TORCH_STEP, ChunkStep


def _flags(step: ChunkStep, **kw) -> Flags:
    """The ops' switches; a clear error where the step cannot honour one."""
    f = Flags(**kw)
    if f.momentum and not f.velocity_decay and not step.steps_sum:
        raise ValueError(f"velocity_decay=False needs the step sums sum_t c_t u_t^T, which the {step.name} step "
                         "does not return: use backend 'chunk' or 'naive' for that ablation")
    return f


def dgd_memory_chunk(
    k: Tensor,
    v: Tensor,
    q: Tensor,
    eta: Tensor,
    alpha: Tensor,
    beta: Tensor,
    state: MemoryState,
    *,
    chunk_size: int,
    dgd: bool = True,
    momentum: bool = True,
    self_target: bool = True,
    act: str = "silu",
    damping: bool = True,
    unit_target: bool = True,
    velocity_decay: bool = True,
    step: ChunkStep = TORCH_STEP,
) -> tuple[Tensor, MemoryState]:
    """Chunk-parallel equivalent of :func:`hope.ops.dgd.naive.dgd_memory_naive` (same arguments).

    ``step`` runs one chunk of one weight matrix (:data:`hope.ops.dgd.step.TORCH_STEP`, or the Triton step).
    """
    check_inputs(chunk_size, k=k, v=v, q=q)
    f = _flags(step, dgd=dgd, momentum=momentum, self_target=self_target, act=act, damping=damping,
               unit_target=unit_target, velocity_decay=velocity_decay)
    if k.shape[-2] == 0:
        return q.clone(), state
    return memory_chunks(k, v, q, eta, torch.log(alpha), beta, state, chunk_size, f, step)


def smt_kv_chunk(
    k_in: Tensor,
    v_in: Tensor,
    eta: Tensor,
    alpha: Tensor,
    beta: Tensor,
    state: MemoryState,
    *,
    chunk_size: int,
    dgd: bool = True,
    momentum: bool = True,
    act: str = "silu",
    damping: bool = True,
    unit_target: bool = True,
    velocity_decay: bool = True,
    step: ChunkStep = TORCH_STEP,
) -> tuple[Tensor, Tensor, MemoryState]:
    """Chunk-parallel equivalent of :func:`hope.ops.dgd.naive.smt_kv_naive` (same arguments, ``step`` as in
    :func:`dgd_memory_chunk`)."""
    check_inputs(chunk_size, k_in=k_in, v_in=v_in)
    f = _flags(step, dgd=dgd, momentum=momentum, act=act, damping=damping, unit_target=unit_target,
               velocity_decay=velocity_decay)
    if k_in.shape[-2] == 0:
        return k_in.clone(), v_in.clone(), state
    return kv_chunks(k_in, v_in, eta, torch.log(alpha), beta, state, chunk_size, f, step)
