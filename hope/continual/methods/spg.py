"""SPG, parameter-level soft-masking (Konishi, Kurokawa, Ono, Ke, Kim, Liu, ICML 2023, "Parameter-Level Soft-
Masking for Continual Learning"; rules as in the official code UIC-Liu-Lab/SPG, cl_eval.md §4.6).

After task t: accumulate the task loss gradient G over (up to ``importance_batches`` batches of) its training
data; importance per parameter tensor ``gamma_t = |tanh((G - mean G) / std G)|``; accumulated by element-wise
max, ``gamma <- max(gamma, gamma_t)``. While training later tasks the **final update** is masked,
``d <- (1 - gamma) * d`` (not the gradient, which Adam would rescale back; cl_eval.md §4.11). One shared LM head,
so SPG's per-task "other heads" term does not apply.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hope.continual.learner import Learner, target_loss
from hope.continual.stream import ExperienceView


def zscore_importance(g: Tensor) -> Tensor:
    """``|tanh(z-score of g over its elements)|`` (unbiased std, as torch.std); zeros where g is constant."""
    if g.numel() < 2:
        return torch.zeros_like(g)
    std = g.std()
    if std == 0 or not torch.isfinite(std):
        return torch.zeros_like(g)
    return torch.tanh((g - g.mean()) / std).abs()


def mask_update(delta: Tensor, importance: Tensor) -> Tensor:
    """The update that moves a parameter with importance 1 not at all and one with importance 0 freely."""
    return (1 - importance) * delta


class ImportanceMasking(Learner):
    """Soft masks of the final update by importances accumulated over tasks (max); SPG and DAS differ in what a
    unit is (``mask``) and how its importance is measured (``end_task``)."""

    uses_boundaries = True
    transforms_update = True
    state_attrs = ("importance",)
    mask = staticmethod(mask_update)

    def __init__(self, model, *, importance_batches: int = 8, **kw) -> None:
        super().__init__(model, **kw)
        self.importance_batches, self.importance = importance_batches, {}

    def transform_update(self, deltas: dict[str, Tensor]) -> dict[str, Tensor]:
        return {n: self.mask(d, self.importance[n]) if n in self.importance else d for n, d in deltas.items()}

    def remember(self, name: str, importance: Tensor) -> None:
        """Accumulate a task's importance of parameter ``name`` by element-wise max."""
        old = self.importance.get(name)
        self.importance[name] = importance if old is None else torch.maximum(old, importance)


class SPG(ImportanceMasking):
    name = "spg"

    def end_task(self, view: ExperienceView) -> None:
        params = self.trainable()
        self.model.train()
        self.model.zero_grad(set_to_none=True)
        data = self.sample(view.train, len(view.train))
        bs = max(1, len(data) // self.importance_batches)
        for b in range(0, min(len(data), bs * self.importance_batches), bs):
            logits, labels, _ = self.forward(data[b : b + bs])
            target_loss(logits, labels).backward()
        for n, p in params.items():
            g = p.grad.detach() if p.grad is not None else torch.zeros_like(p)
            self.remember(n, zscore_importance(g))
        self.model.zero_grad(set_to_none=True)
