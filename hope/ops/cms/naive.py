"""Token-by-token ground truth of a CMS level (paper Eq. 30-31)."""

from __future__ import annotations

import torch
from torch import Tensor

from hope.ops.cms.common import (
    CMSLevelState,
    accumulate,
    assoc_grads,
    assoc_keys_values,
    check_level_inputs,
    read_level,
)


def cms_level_naive(
    x: Tensor, w_key: Tensor, w_value: Tensor, eta: Tensor, state: CMSLevelState, *, chunk_size: int,
    first_order: bool = False, unit_kv: bool = True,
) -> tuple[Tensor, CMSLevelState]:
    """Read ``MLP_theta(x_t)`` token by token, summing the inner gradient; step at each chunk end.

    ``x (B, T, D)`` is the level's (normalized) input; ``w_key``, ``w_value`` ``(D, D)`` the static
    projections of the associative objective; ``eta`` the level's step size. Returns ``(y, state)``.
    ``first_order``: the inner gradient is a constant for the outer gradient (``theta - eta * sg(sum grad)``).
    ``unit_kv``: unit-norm keys and values (:func:`hope.ops.cms.common.assoc_keys_values`).
    """
    check_level_inputs(x, chunk_size)
    keys, values = assoc_keys_values(x, w_key, w_value, unit_kv)
    state = state.detach_sums() if first_order else state
    outs = []
    for t in range(x.shape[1]):
        outs.append(read_level(state, x[:, t : t + 1])[0])
        grads = assoc_grads(state, keys[:, t : t + 1], values[:, t : t + 1])
        if first_order:
            grads = tuple(g.detach() for g in grads)
        state = accumulate(state, grads, 1, eta, chunk_size)
    return torch.cat(outs, dim=1), state
