"""Online EWC (Kirkpatrick et al., PNAS 2017; online form: Schwarz et al. 2018, "Progress & Compress").

Loss on task t: ``l_t(theta) + (lam / 2) * sum_i F_i (theta_i - theta*_i)^2`` with one running Fisher diagonal
``F <- gamma * F + F_t`` and the anchor ``theta* <- theta_t`` after each task (task boundaries used). ``F_t`` is
the empirical Fisher: squared **per-example** gradients of the target log-likelihood, averaged over up to
``fisher_samples`` training examples (never the square of a minibatch-mean gradient; van de Ven 2025).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hope.continual.learner import Learner, target_loss
from hope.continual.stream import Example, ExperienceView


def ewc_penalty(params: dict[str, Tensor], anchor: dict[str, Tensor], fisher: dict[str, Tensor],
                lam: float) -> Tensor:
    """``(lam / 2) * sum F (theta - theta*)^2``; its gradient is ``lam * F * (theta - theta*)``."""
    total = sum(((fisher[n] * (p - anchor[n]) ** 2).sum() for n, p in params.items() if n in fisher),
                torch.zeros(()))
    return 0.5 * lam * total


class EWC(Learner):
    name = "ewc"
    uses_boundaries = True
    state_attrs = ("fisher", "anchor")

    def __init__(self, model, *, ewc_lambda: float = 100.0, gamma: float = 1.0, fisher_samples: int = 64,
                 **kw) -> None:
        super().__init__(model, **kw)
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"online EWC decay gamma must be in (0, 1], got {gamma}")
        self.lam, self.gamma, self.fisher_samples = ewc_lambda, gamma, fisher_samples
        self.fisher: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}

    def loss(self, batch: Sequence[Example]) -> Tensor:
        loss = super().loss(batch)
        if self.fisher:
            loss = loss + ewc_penalty(self.trainable(), self.anchor, self.fisher, self.lam).to(loss.device)
        return loss

    def empirical_fisher(self, examples: Sequence[Example]) -> dict[str, Tensor]:
        params = self.trainable()
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        self.model.train()
        for ex in examples:
            self.model.zero_grad(set_to_none=True)
            logits, labels, _ = self.forward([ex])
            target_loss(logits, labels).backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach() ** 2
        self.model.zero_grad(set_to_none=True)
        return {n: f / max(1, len(examples)) for n, f in fisher.items()}

    def end_task(self, view: ExperienceView) -> None:
        f_t = self.empirical_fisher(self.sample(view.train, self.fisher_samples))
        self.fisher = {n: self.gamma * self.fisher[n] + f if n in self.fisher else f for n, f in f_t.items()}
        self.anchor = {n: p.detach().clone() for n, p in self.trainable().items()}
