"""DAS-lite, unit-level soft-masking (Ke et al., ICLR 2023, "Continual Pre-training of Language Models";
official code UIC-Liu-Lab/ContinualLM, cl_eval.md §4.7).

A unit is one slice along dim 0 of a parameter (an output neuron's weight row, a head of a per-head tensor, one
element of a vector). Its importance is the gradient of the task loss with respect to a virtual multiplicative
gate on that unit, accumulated over the task's training data: for output = g_u * (W_u x + b_u) at g = 1 this is
``sum_i W_ui dL/dW_ui + b_u dL/db_u``, computed from the weight gradients without inserting gates. Normalised
per parameter as ``|tanh(z-score)|``, accumulated over tasks by max, and applied to the **final update** of the
unit's row, ``d_u <- (1 - impt_u) d_u``. Left out (the models here start from random init and have no dropout):
the general-knowledge importance from a proxy KL before the first domain, and the contrastive integration loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hope.continual.learner import target_loss
from hope.continual.methods.spg import ImportanceMasking, zscore_importance
from hope.continual.stream import ExperienceView


def gate_gradient(weight: Tensor, grad: Tensor) -> Tensor:
    """dL/dg_u of a virtual gate on each dim-0 unit: ``sum over the unit's slice of W * dL/dW``."""
    return (weight * grad).reshape(weight.shape[0], -1).sum(1) if weight.dim() > 1 else weight * grad


def mask_units(delta: Tensor, unit_importance: Tensor) -> Tensor:
    """``(1 - impt_u)`` applied to every entry of unit u's slice of the update."""
    if delta.dim() == 0:  # a scalar parameter is one unit
        return (1 - unit_importance.reshape(())) * delta
    shape = (-1,) + (1,) * (delta.dim() - 1)
    return (1 - unit_importance).reshape(shape) * delta


class DAS(ImportanceMasking):
    name = "das"
    mask = staticmethod(mask_units)

    def end_task(self, view: ExperienceView) -> None:
        params = self.trainable()
        gates = {n: torch.zeros(p.shape[0] if p.dim() > 1 else p.numel(), device=p.device)
                 for n, p in params.items()}
        self.model.train()
        data = self.sample(view.train, len(view.train))
        bs = max(1, len(data) // self.importance_batches)
        for b in range(0, min(len(data), bs * self.importance_batches), bs):
            self.model.zero_grad(set_to_none=True)
            logits, labels, _ = self.forward(data[b : b + bs])
            target_loss(logits, labels).backward()
            for n, p in params.items():
                if p.grad is not None:
                    gates[n] += gate_gradient(p.detach(), p.grad.detach()).reshape(-1)
        self.model.zero_grad(set_to_none=True)
        for n, g in gates.items():
            self.remember(n, zscore_importance(g))
