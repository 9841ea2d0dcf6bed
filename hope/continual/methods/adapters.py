"""Parameter isolation with per-task adapter columns (after Progressive Neural Networks, Rusu et al. 2016,
arXiv 1606.04671; here the cheap form of one residual bottleneck adapter per task on the final hidden state).

Task 0 trains the whole model; from task 1 on the backbone is frozen and task k trains only its own adapter
``h <- h + up_k(silu(down_k(h)))`` (``up_k`` zero-initialised), added before the model's final norm. At test time
the adapter of the evaluated task is switched in, so this needs the **task id at test** (Task-IL): earlier
tasks cannot be forgotten by construction, which makes it a stability reference, not a competitor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hope.continual.learner import Learner
from hope.continual.stream import ExperienceView


class Adapter(nn.Module):
    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.down, self.up = nn.Linear(dim, rank), nn.Linear(rank, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.up(torch.nn.functional.silu(self.down(h)))


class Adapters(Learner):
    name = "adapters"
    uses_boundaries = True
    uses_task_id = True
    state_attrs = ("adapters",)

    def __init__(self, model, *, adapter_rank: int = 16, **kw) -> None:
        norm = getattr(model, "norm", None)
        if not isinstance(norm, nn.Module):
            raise ValueError("Adapters needs a model with a final `norm` module (a HopeLM)")
        super().__init__(model, **kw)
        self.rank, self.adapters, self.active = adapter_rank, nn.ModuleList(), None
        self._hook = norm.register_forward_pre_hook(self._apply)

    def _apply(self, _mod: nn.Module, args: tuple) -> tuple | None:
        if self.active is None or self.active == 0:
            return None
        return (self.adapters[self.active - 1](args[0]),) + tuple(args[1:])

    def begin_task(self, view: ExperienceView) -> None:
        super().begin_task(view)
        self.active = view.task_id
        if view.task_id == 0:
            return
        self.model.requires_grad_(False)
        dim = self.model.norm.weight.shape[0]
        while len(self.adapters) < view.task_id:
            self.adapters.append(Adapter(dim, self.rank).to(self.device))
        self.optimizer = torch.optim.AdamW(self.adapters[view.task_id - 1].parameters(), lr=self.lr,
                                           weight_decay=self.weight_decay)

    def trainable(self) -> dict[str, nn.Parameter]:
        if self.active:
            return {f"adapter{self.active}.{n}": p for n, p in self.adapters[self.active - 1].named_parameters()}
        return super().trainable()

    def score(self, requests: Sequence[tuple[list[int], list[int]]], task_id: int | None = None
              ) -> list[tuple[float, bool]]:
        if task_id is None:
            raise ValueError("Adapters needs the task id at test time (Task-IL)")
        saved, self.active = self.active, task_id if task_id <= len(self.adapters) else 0
        try:
            return super().score(requests, task_id)
        finally:
            self.active = saved
