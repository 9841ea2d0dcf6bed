"""Parallelism applied from outside the model (torchtitan style): process group, FSDP2 / DDP, compile, AC.

Launch with ``torchrun --nproc_per_node=N train.py ...``; NCCL on GPUs, gloo on CPU. FSDP2
(``torch.distributed.fsdp.fully_shard``) shards every :class:`~hope.model.HopeBlock` and then the root;
DDP replicates. Activation checkpointing and ``torch.compile`` are applied per block, before sharding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from hope.ops.common import COMPILE_ENV


@dataclasses.dataclass
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when launched by torchrun; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cpu" and world == int(os.environ.get("LOCAL_WORLD_SIZE", "0")):
            _gloo_over_loopback()
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda"
                                 else None)
    return DistInfo(rank, world, local_rank, dev)


def loopback_interface() -> str | None:
    """This machine's loopback network interface (``lo`` on Linux, ``lo0`` on macOS), or None."""
    return next((name for _, name in socket.if_nameindex() if name in ("lo", "lo0")), None)


def _gloo_over_loopback() -> None:
    """Every rank on this machine: gloo talks over the loopback interface unless GLOO_SOCKET_IFNAME says
    otherwise, instead of binding whatever address the hostname resolves to (which depends on how the machine
    is set up; a single-node group needs no other interface)."""
    loopback = loopback_interface()
    if loopback:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback)


def destroy_distributed() -> None:
    """Leave the process group together: a barrier first, so no rank tears down its gloo/NCCL connections while
    another still works (rank 0 writes the plot and result after the others are done; a rank destroying its group
    meanwhile aborted in teardown under CI load)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def rank_zero_first(info: DistInfo) -> Iterator[None]:
    """Run the body on rank 0 first (e.g. download and tokenize a corpus), then on the others."""
    if not info.is_main:
        barrier()
    yield
    if info.is_main:
        barrier()


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Sum (or average) ``t`` over processes; identity in a single process."""
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        if op == "mean":
            t /= dist.get_world_size()
    return t


def resolve_mode(mode: str, world: int) -> str:
    if mode == "auto":
        return "fsdp" if world > 1 else "none"
    if mode in ("ddp", "fsdp") and world == 1:
        return "none"
    if mode == "none" and world > 1:
        raise ValueError(f"parallel=none with {world} processes: each would train alone; use ddp or fsdp")
    return mode


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's forward in the backward (non-reentrant); state-dict keys are unchanged."""
    for block in model.blocks:
        forward = block.forward

        def checkpointed(*args, _forward=forward, **kwargs):
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        block.forward = checkpointed


class LMLoss(nn.Module):
    """``forward(x) = model(x, labels=x).loss``: what the training loop calls, and what DDP wraps (so DDP
    sees the loss alone, not the recurrent state, when it looks for unused parameters)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, labels=input_ids).loss


def parallelize(model: nn.Module, mode: str, info: DistInfo, compile: bool = False,
                activation_checkpointing: bool = False) -> nn.Module:
    """Apply AC, compile and FSDP2 / DDP to ``model`` (already on ``info.device``, sharded in place by
    FSDP2); returns the loss module the training loop calls (:class:`LMLoss`, DDP-wrapped for DDP)."""
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile:  # the memory ops stay outside the blocks' graphs (hope.ops.backend) and compile per chunk
        os.environ.setdefault(COMPILE_ENV, "1")
        for block in model.blocks:
            block.compile()
    if mode == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        # fp32 parameters and gradient reduction; bf16 compute comes from autocast in the training loop.
        # fully_shard cannot shard 0-d parameters (CMS step sizes): they stay replicated and
        # sync_replicated_grads averages their gradients.
        mesh = init_device_mesh(info.device.type, (info.world,))
        scalars = {p for p in model.parameters() if p.ndim == 0}
        for block in model.blocks:
            fully_shard(block, mesh=mesh, ignored_params=scalars)
        fully_shard(model, mesh=mesh, ignored_params=scalars)
        return LMLoss(model)
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [info.device.index] if info.device.type == "cuda" else None
        # find_unused_parameters: a CMS level whose chunk is longer than the sequence never uses its step size
        return DistributedDataParallel(LMLoss(model), device_ids=ids, find_unused_parameters=True)
    return LMLoss(model)


def grad_sync(loss_module: nn.Module, mode: str, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient reduction on micro-batches that are not the last of an accumulation."""
    if mode == "ddp" and not sync:
        return loss_module.no_sync()
    if mode == "fsdp":
        loss_module.model.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def _is_dtensor(t: torch.Tensor) -> bool:
    return hasattr(t, "to_local") and hasattr(t, "placements")


def sync_replicated_grads(model: nn.Module, mode: str) -> None:
    """Under FSDP2, average the gradients of the parameters left unsharded (0-d) over processes."""
    if mode != "fsdp" or not dist.is_initialized():
        return
    for p in model.parameters():
        if p.grad is not None and not _is_dtensor(p):
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= dist.get_world_size()


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global L2 norm of the gradients (FSDP2 shards and replicated parameters alike), clipped in place to
    ``max_norm`` when > 0. Returns the norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    sharded = [g.to_local() for g in grads if _is_dtensor(g)]
    plain = [g for g in grads if not _is_dtensor(g)]
    device = grads[0].device if grads else torch.device("cpu")
    sq = torch.zeros(2, dtype=torch.float32, device=device)
    for i, group in enumerate((sharded, plain)):
        if group:
            sq[i] = torch.stack([torch.linalg.vector_norm(g.float()) ** 2 for g in group]).sum()
    if sharded and dist.is_initialized():
        sq[0:1] = all_reduce(sq[0:1])
    norm = sq.sum().sqrt()
    if max_norm > 0:
        coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for g in sharded + plain:
            g.mul_(coef.to(g.dtype))
    return norm
