"""The learner interface: ``begin_task``, ``observe(batch)``, ``end_task``, ``score``; wraps any language model.

The model is any ``nn.Module`` called as ``model(input_ids, state=None)`` returning an object with ``.logits``
(``(B, T, V)``) and ``.state`` (a :class:`hope.HopeLM`, or anything with that contract). :class:`Learner` is
naive fine-tuning; every method overrides one or more hooks:

* ``loss(batch)``: the training objective (regularizers, replay, distillation);
* ``transform_update(deltas)``: a map on the **final** parameter update of the optimizer step (masks,
  projections), so that Adam's per-coordinate rescaling cannot undo it (cl_eval.md §4.11);
* ``begin_task`` / ``end_task``: consolidation at task boundaries (methods that use them say so).

HOPE's switches (``eval_mode="frozen"``, ``persist_cms``, ``multi_frequency``) are options of every learner.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hope.continual.hope_switches import cms_param_groups, frozen_in_context, write_back_cms
from hope.continual.state import clone_state
from hope.continual.stream import Example, ExperienceView
from hope.optim import MultiFrequency
from hope.scoring import score_requests

EVAL_MODES = ("adaptive", "frozen")


def collate(batch: Sequence[Example], max_len: int, pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """``(input_ids, labels)`` of ``context + target`` (left-truncated to ``max_len``), right-padded; labels are
    -100 except on target tokens (aligned with the inputs: position t's label is token t)."""
    if not batch:
        raise ValueError("collate got an empty batch")
    seqs = []
    for ex in batch:
        seq, n = list(ex.context) + list(ex.target), len(ex.target)
        if n >= max_len:
            raise ValueError(f"a target of {n} tokens does not fit max_len={max_len}")
        seqs.append((seq[-max_len:], n))
    width = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for r, (s, n) in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s)
        labels[r, len(s) - n : len(s)] = torch.tensor(s[len(s) - n :])
    return ids, labels


def target_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean next-token cross-entropy over the target positions (labels aligned with the inputs)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


class Learner:
    """Naive fine-tuning (the lower bound): train on each task in turn with one optimizer.

    ``optimizer``: ``"adamw"`` or ``"sgd"``; ``weight_decay`` defaults to 0 so masks on the update are the only
    thing that moves protected weights. ``reset_optimizer``: fresh optimizer state at each task (recorded).
    """

    name = "naive"
    uses_boundaries = False   # needs to be told where tasks start and end
    uses_task_id = False      # needs the task id at test time
    sees_past_data = False    # trains on the union of all tasks seen so far (joint / cumulative)
    stores_examples = False   # keeps a bounded buffer of past training examples (replay, A-GEM)
    transforms_update = False
    state_attrs: tuple[str, ...] = ()  # method state included in every snapshot

    def __init__(self, model: nn.Module, *, lr: float = 1e-3, optimizer: str = "adamw", weight_decay: float = 0.0,
                 grad_clip: float | None = 1.0, max_len: int = 256, seed: int = 0, eval_mode: str = "adaptive",
                 persist_cms: bool = False, multi_frequency: bool = False, reset_optimizer: bool = False,
                 eval_batch_tokens: int = 16384) -> None:
        if eval_mode not in EVAL_MODES:
            raise ValueError(f"eval_mode must be one of {EVAL_MODES}, got {eval_mode!r}")
        if optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
        self.model, self.lr, self.opt_name, self.weight_decay = model, lr, optimizer, weight_decay
        self.grad_clip, self.max_len, self.eval_mode = grad_clip, max_len, eval_mode
        self.persist_cms, self.multi_frequency, self.reset_optimizer = persist_cms, multi_frequency, reset_optimizer
        self.eval_batch_tokens = eval_batch_tokens
        self.rng = random.Random(seed)
        self.task_id = -1
        self.steps = 0
        self.optimizer = self.build_optimizer()

    # ---- setup ----------------------------------------------------------------------------------------------
    def build_optimizer(self) -> torch.optim.Optimizer:
        if self.multi_frequency:
            groups = cms_param_groups(self.model)
        else:
            groups = [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        if self.opt_name == "sgd":
            opt = torch.optim.SGD(groups, lr=self.lr, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        return MultiFrequency(opt) if self.multi_frequency else opt

    def flags(self) -> dict[str, bool | str]:
        return {"uses_boundaries": self.uses_boundaries, "uses_task_id": self.uses_task_id,
                "sees_past_data": self.sees_past_data, "stores_examples": self.stores_examples,
                "eval_mode": self.eval_mode,
                "persist_cms": self.persist_cms, "multi_frequency": self.multi_frequency,
                "optimizer": self.opt_name, "reset_optimizer": self.reset_optimizer}

    # ---- the interface the protocol calls ------------------------------------------------------------------
    def begin_task(self, view: ExperienceView) -> None:
        self.task_id = view.task_id
        if self.reset_optimizer and view.task_id > 0:
            self.optimizer = self.build_optimizer()

    def observe(self, batch: Sequence[Example]) -> float:
        """One training step on ``batch``; returns the loss."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(batch)
        loss.backward()
        self.step()
        self.steps += 1
        return float(loss.detach())

    def end_task(self, view: ExperienceView) -> None:
        pass

    @torch.no_grad()
    def score(self, requests: Sequence[tuple[list[int], list[int]]], task_id: int | None = None
              ) -> list[tuple[float, bool]]:
        """``(log-likelihood, is_greedy)`` of each ``(context, continuation)``; ``task_id`` is given only to
        learners with ``uses_task_id``."""
        self.model.eval()
        ctx = frozen_in_context(self.model) if self.eval_mode == "frozen" else contextlib.nullcontext()
        with ctx:
            return score_requests(self.model, requests, max_length=self.max_len,
                                  batch_tokens=self.eval_batch_tokens)

    # ---- hooks ---------------------------------------------------------------------------------------------
    def tensors(self, batch: Sequence[Example]) -> tuple[Tensor, Tensor]:
        ids, labels = collate(batch, self.max_len)
        return ids.to(self.device), labels.to(self.device)

    @staticmethod
    def logits_of(model: nn.Module, ids: Tensor) -> tuple[Tensor, object]:
        out = model(ids)
        return (out.logits if hasattr(out, "logits") else out), getattr(out, "state", None)

    def forward(self, batch: Sequence[Example]) -> tuple[Tensor, Tensor, object]:
        ids, labels = self.tensors(batch)
        logits, state = self.logits_of(self.model, ids)
        return logits, labels, state

    def loss(self, batch: Sequence[Example]) -> Tensor:
        logits, labels, state = self.forward(batch)
        if self.persist_cms:
            self._last_state = state
        return target_loss(logits, labels)

    def transform_update(self, deltas: dict[str, Tensor]) -> dict[str, Tensor]:
        return deltas

    def step(self) -> None:
        params = self.trainable()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(params.values(), self.grad_clip)
        before = {n: p.detach().clone() for n, p in params.items()} if self.transforms_update else None
        self.optimizer.step()
        with torch.no_grad():
            if before is not None:
                deltas = self.transform_update({n: p.detach() - before[n] for n, p in params.items()})
                for n, p in params.items():
                    p.copy_(before[n] + deltas[n])
            if self.persist_cms:
                write_back_cms(self.model, self._last_state)
                self._last_state = None

    # ---- helpers -------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def trainable(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def sample(self, items: Sequence, k: int) -> list:
        return self.rng.sample(list(items), min(k, len(items)))

    # ---- snapshots (the protocol restores them around every evaluation) -------------------------------------
    def snapshot(self) -> dict:
        return {"model": clone_state(self.model.state_dict()), "optimizer": clone_state(self.optimizer.state_dict()),
                "method": {a: clone_state(getattr(self, a)) for a in self.state_attrs},
                "torch_rng": torch.get_rng_state(), "rng": self.rng.getstate(), "steps": self.steps,
                "task_id": self.task_id}

    def restore(self, snap: dict) -> None:
        self.model.load_state_dict(snap["model"])
        self.optimizer.load_state_dict(clone_state(snap["optimizer"]))
        for a, v in snap["method"].items():
            cur = getattr(self, a)
            if isinstance(cur, nn.Module) and isinstance(v, nn.Module):
                cur.load_state_dict(v.state_dict())  # in place: the optimizer may hold its parameters
            else:
                setattr(self, a, clone_state(v))
        torch.set_rng_state(snap["torch_rng"])
        self.rng.setstate(snap["rng"])
        self.steps, self.task_id = snap["steps"], snap["task_id"]

