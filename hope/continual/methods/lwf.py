"""LwF, Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017), token-level for language models.

Before task t (t > 0) the current model is frozen as the teacher. Loss on task t: ``l_t + alpha * T^2 *
KL(softmax(z_old / T) || softmax(z / T))`` on the target positions of the **current** task's inputs, with
temperature ``T = 2``: the teacher's softened distribution is the distillation target (task boundaries used).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from hope.continual.learner import Learner, target_loss
from hope.continual.stream import Example, ExperienceView


def distillation_target(old_logits: Tensor, temperature: float) -> Tensor:
    """``softmax(z_old / T)``: Li & Hoiem's ``y'_o = y_o^(1/T) / sum_j y_o^(1/T)`` in logit form."""
    return torch.softmax(old_logits.float() / temperature, dim=-1)


def distillation_loss(logits: Tensor, old_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 * KL(target || softmax(z / T))`` averaged over rows (zero, with zero gradient, when z == z_old)."""
    target = distillation_target(old_logits, temperature)
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return temperature**2 * F.kl_div(logp, target, reduction="batchmean")


class LwF(Learner):
    name = "lwf"
    uses_boundaries = True
    state_attrs = ("teacher",)

    def __init__(self, model, *, lwf_alpha: float = 1.0, temperature: float = 2.0, **kw) -> None:
        super().__init__(model, **kw)
        self.alpha, self.temperature, self.teacher = lwf_alpha, temperature, None

    def begin_task(self, view: ExperienceView) -> None:
        super().begin_task(view)
        if view.task_id > 0:
            self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False)

    def loss(self, batch: Sequence[Example]) -> Tensor:
        ids, labels = self.tensors(batch)
        logits, state = self.logits_of(self.model, ids)
        if self.persist_cms:
            self._last_state = state
        loss = target_loss(logits, labels)
        if self.teacher is None:
            return loss
        with torch.no_grad():
            old, _ = self.logits_of(self.teacher, ids)
        pos = labels[:, 1:] != -100  # the positions that predict target tokens
        return loss + self.alpha * distillation_loss(logits[:, :-1][pos], old[:, :-1][pos], self.temperature)
