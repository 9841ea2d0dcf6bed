"""A-GEM (Chaudhry, Ranzato, Rohrbach, Elhoseiny, ICLR 2019, "Efficient Lifelong Learning with A-GEM").

The reference gradient ``g_ref`` is the loss gradient on a batch from the episodic memory of past tasks. The
projection acts on the **final update** d (cl_eval.md §4.3, §4.11): if ``<d, g_ref> > 0`` (the step would raise
the memory loss to first order) then ``d <- d - <d, g_ref> / <g_ref, g_ref> * g_ref``. With SGD, d = -lr * g and
this is exactly A-GEM's ``g~ = g - (g.g_ref / g_ref.g_ref) g_ref`` when ``g.g_ref < 0``; with Adam it still
guarantees ``<d~, g_ref> <= 0`` for the step actually taken. The memory keeps ``per_task`` examples of each
finished task (task boundaries used).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hope.continual.learner import Learner, target_loss
from hope.continual.stream import Example, ExperienceView


def agem_project(delta: Tensor, g_ref: Tensor) -> Tensor:
    """Project the flat update ``delta`` so that it does not increase the reference loss to first order."""
    dot = torch.dot(delta, g_ref)
    ref2 = torch.dot(g_ref, g_ref)
    if dot <= 0 or ref2 == 0:
        return delta
    return delta - (dot / ref2) * g_ref


class AGEM(Learner):
    name = "agem"
    uses_boundaries = True
    transforms_update = True
    stores_examples = True
    state_attrs = ("memory",)

    def __init__(self, model, *, per_task: int = 64, ref_batch: int = 32, **kw) -> None:
        super().__init__(model, **kw)
        self.per_task, self.ref_batch, self.memory = per_task, ref_batch, []
        self._g_ref: dict[str, Tensor] | None = None

    def observe(self, batch: Sequence[Example]) -> float:
        self._g_ref = None
        if self.memory:
            self.model.train()
            self.optimizer.zero_grad(set_to_none=True)
            logits, labels, _ = self.forward(self.sample(self.memory, self.ref_batch))
            target_loss(logits, labels).backward()
            self._g_ref = {n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                           for n, p in self.trainable().items()}
        return super().observe(batch)

    def transform_update(self, deltas: dict[str, Tensor]) -> dict[str, Tensor]:
        if self._g_ref is None:
            return deltas
        names = list(deltas)
        flat = agem_project(torch.cat([deltas[n].flatten() for n in names]),
                            torch.cat([self._g_ref[n].flatten() for n in names]))
        out, o = {}, 0
        for n in names:
            k = deltas[n].numel()
            out[n] = flat[o : o + k].view_as(deltas[n])
            o += k
        return out

    def end_task(self, view: ExperienceView) -> None:
        self.memory += self.sample(view.train, self.per_task)
