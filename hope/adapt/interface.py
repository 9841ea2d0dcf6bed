"""A converted model behind :class:`hope.HopeLM`'s calling contract, for code written against HopeLM.

``out = lm(input_ids, labels=None, state=None)`` gives ``out.logits``, ``out.loss`` and ``out.state`` (the
:class:`~hope.adapt.hf.CMSCache`: KV cache and CMS state); passing ``out.state`` back continues the stream. This
is the contract of the continual-learning harness's learners and of ``eval/`` (``model(ids, state=...)``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from hope.adapt.hf import CMSAdaptedMixin, CMSCache


@dataclasses.dataclass
class LMOutput:
    logits: Tensor
    loss: Tensor | None
    state: CMSCache


class HopeInterface(nn.Module):
    """Wraps a CMS-converted ``transformers`` model (``self.hf``) with HopeLM's ``forward`` and ``generate``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, CMSAdaptedMixin):
            raise TypeError(f"HopeInterface wraps a model converted by hope.adapt.cmsify, not {type(model).__name__}")
        self.hf = model

    def forward(self, input_ids: Tensor, labels: Tensor | None = None, state: CMSCache | None = None,
                **kwargs: Any) -> LMOutput:
        cache = CMSCache(config=self.hf.config.get_text_config(decoder=True)) if state is None else state
        out = self.hf(input_ids, labels=labels, cache=cache, use_cache=True, **kwargs)
        return LMOutput(out.logits, out.loss, cache)

    @torch.no_grad()
    def generate(self, prompt_ids: Tensor, max_new_tokens: int = 32, temperature: float = 0.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """HopeLM.generate's signature: the new tokens ``(B, max_new_tokens)``."""
        from hope.adapt.training import generate

        return generate(self.hf, prompt_ids, max_new_tokens, temperature, top_k, generator)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
