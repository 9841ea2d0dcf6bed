"""MultiFrequency: the CMS schedule on the optimizer-step axis (paper Eq. 70-71, Def. 2).

Wraps any optimizer. Each parameter group gets an ``every`` option (default 1): the group is stepped on
calls t = k, 2k, 3k, ... of ``step()`` with the gradient accumulated over the k calls since its last
step, and left untouched (no update, no weight decay, no optimizer-state change) on the other calls.
A group with ``every=1`` is the wrapped optimizer unchanged.

``accumulate="mean"`` (default) hands the wrapped optimizer (sum of the k gradients) / k, so ``every=k``
acts like a k-times larger batch for that group and its hyperparameters (eps, weight decay, clipping)
keep their meaning. ``accumulate="sum"`` hands over the sum, which with plain SGD is exactly the CMS level
rule theta <- theta - eta * sum_{chunk} grad (Eq. 71). A parameter with no gradient on some calls counts
as zero there (the mean still divides by k).

The wrapper shares ``param_groups`` and ``state`` with the wrapped optimizer (LR schedulers work on it);
``state_dict`` holds the wrapped optimizer's state, the call counter and the accumulators. Gradients in
``p.grad`` are left as the caller set them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer


class MultiFrequency(Optimizer):
    """Step each param group of ``optimizer`` every ``group['every']`` calls with accumulated gradients."""

    def __init__(self, optimizer: Optimizer, accumulate: str = "mean") -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"MultiFrequency wraps a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if accumulate not in ("mean", "sum"):
            raise ValueError(f"accumulate must be 'mean' or 'sum', got {accumulate!r}")
        self.optimizer = optimizer
        self.accumulate = accumulate
        self.calls = 0
        self._accum: dict[Tensor, Tensor] = {}
        # Optimizer.__init__ is not called: groups and state live in the wrapped optimizer. These are the
        # attributes torch.optim.Optimizer's hooks and profiling need.
        self.defaults = {**optimizer.defaults, "every": 1}
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()
        for group in optimizer.param_groups:
            self._check_group(group)

    @staticmethod
    def _check_group(group: dict[str, Any]) -> None:
        group.setdefault("every", 1)
        every = group["every"]
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"param group option every must be a positive int, got {every!r}")

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @property
    def state(self):  # type: ignore[override]
        return self.optimizer.state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)
        self._check_group(self.optimizer.param_groups[-1])

    def __repr__(self) -> str:
        return f"MultiFrequency({self.optimizer!r}, accumulate={self.accumulate!r})"

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._check_group(group)  # groups may have been added or edited since
        self.calls += 1
        saved: list[tuple[Tensor, Tensor | None]] = []
        for group in self.param_groups:
            every = group["every"]
            if every == 1:
                continue
            due = self.calls % every == 0
            for p in group["params"]:
                if p.grad is not None:
                    if p in self._accum:
                        self._accum[p].add_(p.grad)
                    else:
                        self._accum[p] = p.grad.detach().clone()
                saved.append((p, p.grad))
                acc = self._accum.pop(p, None) if due else None
                if acc is not None and self.accumulate == "mean":
                    acc.div_(every)
                p.grad = acc
        try:
            self.optimizer.step()
        finally:
            for p, g in saved:
                p.grad = g
        return loss

    def state_dict(self) -> dict[str, Any]:
        params = [p for group in self.param_groups for p in group["params"]]
        accum = {i: self._accum[p].clone() for i, p in enumerate(params) if p in self._accum}
        return {"optimizer": self.optimizer.state_dict(), "calls": self.calls, "accumulate": self.accumulate,
                "accum": accum}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict["optimizer"])
        for group in self.param_groups:
            self._check_group(group)
        self.calls = int(state_dict["calls"])
        self.accumulate = state_dict["accumulate"]
        params = [p for group in self.param_groups for p in group["params"]]
        self._accum = {}
        for i, t in state_dict["accum"].items():
            p = params[int(i)]
            if t.shape != p.shape:
                raise ValueError(f"accumulator {i} has shape {tuple(t.shape)}, parameter {tuple(p.shape)}")
            self._accum[p] = t.to(device=p.device, dtype=p.dtype).clone()
