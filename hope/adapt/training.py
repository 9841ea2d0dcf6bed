"""Continual pretraining of a converted model with ``train.py --set init_from=DIR`` (a ``save_pretrained`` folder).

``load_init_from`` gives train.py the model and a stand-in for its model config: the checkpoints it writes hold
the converted model's ``config.json`` and safetensors weights, so a step folder loads with
``AutoModelForCausalLM.from_pretrained`` (after ``import hope.adapt``). ``generate`` is HopeLM.generate's
signature (greedy or top-k sampling with a generator) over the model's :class:`~hope.adapt.hf.CMSCache`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hope.adapt.hf import CMSAdaptedMixin, CMSCache


@dataclasses.dataclass
class ConvertedCard:
    """What train.py reads from a model config: ``name``, ``vocab_size`` and ``to_dict()`` (config.json)."""

    name: str
    vocab_size: int
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.config)


def load_init_from(path: str | Path, vocab_size: int, device: torch.device | str = "cpu"
                   ) -> tuple[nn.Module, ConvertedCard]:
    """The converted model in ``path`` (trainable parameters as recorded by ``cmsify(train=...)``) on ``device``,
    and its card. ``vocab_size`` is the tokenizer's, which must fit the model's embedding."""
    from transformers import AutoModelForCausalLM

    import hope.adapt  # noqa: F401  (registers the converted classes)

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"init_from={str(path)!r} holds no config.json (expected a save_pretrained folder "
                                "written by python -m hope.adapt convert, or a train.py checkpoint of one)")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    if not isinstance(model, CMSAdaptedMixin):
        raise ValueError(f"init_from={str(path)!r} is a {type(model).__name__}, not a CMS-converted model; convert "
                         "it first: python -m hope.adapt convert SRC OUT --levels 16,512,static")
    n_vocab = model.get_input_embeddings().weight.shape[0]
    if n_vocab < vocab_size:
        raise ValueError(f"the tokenizer has {vocab_size} tokens but the model in {path} embeds only {n_vocab}; "
                         "use the model's tokenizer (--set tokenizer=DIR)")
    model.config.use_cache = False  # training calls need no KV cache; generate passes its own
    card = ConvertedCard(f"{model.config.model_type}({path.name})", n_vocab, model.config.to_dict())
    return model.to(device), card


@torch.no_grad()
def generate(model: nn.Module, prompt_ids: Tensor, max_new_tokens: int = 32, temperature: float = 0.0,
             top_k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """``HopeLM.generate`` for a converted model: the new tokens ``(B, max_new_tokens)``, greedy when
    ``temperature == 0``, else sampling (optionally top-k); the KV cache and CMS state advance one token per step."""
    cache = CMSCache(config=model.config.get_text_config(decoder=True))
    out = model(prompt_ids, cache=cache, use_cache=True)
    tokens = []
    for _ in range(max_new_tokens):
        logits = out.logits[:, -1].float()
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]
        tokens.append(nxt)
        out = model(nxt[:, None], cache=cache, use_cache=True)
    return torch.stack(tokens, dim=1)
