"""Snapshots of everything a learner carries (parameters, buffers, optimizer and method state, RNG) and a
bit-exact digest of them, so the protocol can prove that evaluation changed nothing."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from typing import Any

import torch
from torch import nn


def clone_state(obj: Any) -> Any:
    """A deep copy with every tensor cloned (detached); modules become copies of themselves."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: clone_state(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple) and not hasattr(obj, "_fields"):
        return type(obj)(clone_state(v) for v in obj)
    return copy.deepcopy(obj)


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{obj.dtype}{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, nn.Module):
        _feed(h, obj.state_dict())
    elif isinstance(obj, dict):
        h.update(b"D%d" % len(obj))
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _feed(h, obj[k])
    elif isinstance(obj, list | tuple):
        h.update(b"L%d" % len(obj))
        for v in obj:
            _feed(h, v)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _feed(h, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    else:
        h.update(repr(obj).encode())


def digest(obj: Any) -> str:
    """SHA-256 over the exact bytes of every tensor (and the repr of everything else) in ``obj``."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()
