"""Hugging Face ``transformers`` wrapper: ``HopeHFConfig``, ``HopeForCausalLM`` and ``HopeCache`` (optional
extra ``pip install hope-nl[hf]``).

Importing this module registers the model with the Auto classes (``model_type="hope"``), so a folder written
by ``save_pretrained`` loads with ``AutoModelForCausalLM.from_pretrained`` (weights in safetensors).
``generate`` carries the model's recurrent state in a :class:`HopeCache` (SMT memories, CMS levels, conv
caches, or the KV cache for attention mixers), so each new token costs one single-token forward: O(1) time and
memory per token for SMT/CMS. A train.py checkpoint (``<dir>/model.safetensors`` + ``<dir>/config.json``)
converts, with the tokenizer it was trained with, by

    python -m hope.hf convert <ckpt_dir> <out_dir>
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from hope.config import HopeConfig
from hope.model import HopeLM, select_state
from hope.training.checkpoint import load_model, load_tokenizer, recorded_tokenizer

try:
    from transformers import PreTrainedConfig
except ImportError:  # transformers < 5
    from transformers import PretrainedConfig as PreTrainedConfig

_FIELDS = tuple(f.name for f in dataclasses.fields(HopeConfig))


class HopeHFConfig(PreTrainedConfig):
    """A :class:`~hope.config.HopeConfig` as a ``PreTrainedConfig``: every HopeConfig field is a flat
    attribute (validated by HopeConfig); ``max_position_embeddings`` mirrors ``max_seq_len`` for tools that
    read it."""

    model_type = "hope"

    def __init__(self, **kwargs: Any) -> None:
        base = HopeConfig().to_dict()
        given = {k: kwargs.pop(k) for k in list(kwargs) if k in base}
        cfg = HopeConfig.from_dict({**base, **given})
        for k, v in cfg.to_dict().items():
            setattr(self, k, v)
        kwargs.pop("max_position_embeddings", None)
        self.max_position_embeddings = cfg.max_seq_len
        self.use_cache = kwargs.pop("use_cache", True)
        kwargs.setdefault("tie_word_embeddings", cfg.tie_embeddings)
        super().__init__(**kwargs)

    @classmethod
    def from_hope_config(cls, cfg: HopeConfig, **kwargs: Any) -> HopeHFConfig:
        return cls(**cfg.to_dict(), **kwargs)

    def to_hope_config(self) -> HopeConfig:
        return HopeConfig.from_dict({k: getattr(self, k) for k in _FIELDS})


class HopeCache:
    """``past_key_values`` of :class:`HopeForCausalLM`: the HopeLM state (one entry per block) and the number
    of tokens it has absorbed. Not a ``transformers.Cache`` (there are no per-layer keys/values to index)."""

    is_compileable = False

    def __init__(self, state: list | None = None, seen_tokens: int = 0) -> None:
        self.state, self.seen_tokens = state, seen_tokens

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def reorder_cache(self, beam_idx: Tensor) -> HopeCache:
        self.state = select_state(self.state, beam_idx)
        return self

    def batch_select_indices(self, indices: Tensor) -> None:
        self.state = select_state(self.state, indices)

    def __len__(self) -> int:
        return 0 if self.state is None else len(self.state)


class HopePreTrainedModel(PreTrainedModel):
    config_class = HopeHFConfig
    base_model_prefix = "model"
    _no_split_modules = ["HopeBlock"]
    _is_stateful = True
    _tied_weights_keys = {"model.lm_head.weight": "model.embed.weight"}

    def _init_weights(self, module: torch.nn.Module) -> None:
        """HopeLM initializes its own parameters; nothing to do here."""

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # generate must not build a DynamicCache: the model returns a HopeCache


class HopeForCausalLM(HopePreTrainedModel, GenerationMixin):
    """:class:`~hope.model.HopeLM` under ``self.model`` with the transformers causal-LM interface."""

    def __init__(self, config: HopeHFConfig) -> None:
        super().__init__(config)
        self.model = HopeLM(config.to_hope_config())
        self.post_init()

    @classmethod
    def from_hope(cls, model: HopeLM) -> HopeForCausalLM:
        """Wrap the weights of an existing :class:`HopeLM`."""
        out = cls(HopeHFConfig.from_hope_config(model.config))
        out.model.load_state_dict(model.state_dict())
        return out

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.model.embed

    def set_input_embeddings(self, value: torch.nn.Embedding) -> None:
        self.model.embed = value

    def get_output_embeddings(self) -> torch.nn.Linear:
        return self.model.lm_head

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        past_key_values: HopeCache | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """``labels`` are aligned with ``input_ids`` (shifted inside, -100 ignored). The attention mask must
        be all ones: a padded position would enter the recurrent state (pad on the right, or run prompts
        separately)."""
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError(
                "HopeForCausalLM does not support padding inside the attention mask: the recurrent "
                "state would absorb the pad tokens; batch prompts of equal length or run them singly"
            )
        cache = past_key_values if isinstance(past_key_values, HopeCache) else None
        state = cache.state if cache is not None else None
        out = self.model(input_ids, labels=labels, state=state)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        seen = (cache.seen_tokens if cache is not None else 0) + input_ids.shape[1]
        new_cache = HopeCache(out.state, seen) if use_cache else None
        return CausalLMOutputWithPast(loss=out.loss, logits=out.logits, past_key_values=new_cache)

    def prepare_inputs_for_generation(
        self,
        input_ids: Tensor,
        past_key_values: HopeCache | None = None,
        attention_mask: Tensor | None = None,
        use_cache: bool = True,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Feed only the tokens the cache has not seen (the whole prompt first, then one token per step)."""
        if isinstance(past_key_values, HopeCache) and past_key_values.seen_tokens > 0 and use_cache:
            input_ids = input_ids[:, past_key_values.seen_tokens :]
        else:
            past_key_values = None
        return {
            "input_ids": input_ids.contiguous(),
            "past_key_values": past_key_values,
            "attention_mask": attention_mask,
            "use_cache": use_cache,
        }


AutoConfig.register("hope", HopeHFConfig, exist_ok=True)
AutoModelForCausalLM.register(HopeHFConfig, HopeForCausalLM, exist_ok=True)


# ---- conversion from train.py checkpoints ------------------------------------------------------------------
def convert(ckpt_dir: str | Path, out_dir: str | Path, tokenizer: str | None = None) -> HopeForCausalLM:
    """Convert a train.py checkpoint (or run directory) into a ``save_pretrained`` folder with the tokenizer
    the checkpoint records, in Hugging Face's format (``AutoTokenizer`` and lm-eval's ``--model hf`` load it).
    ``tokenizer`` (a spec) is needed only for checkpoints that record none; it must match a recorded one."""
    _, hope_model = load_model(ckpt_dir)
    model = HopeForCausalLM.from_hope(hope_model)
    model.save_pretrained(str(out_dir))
    if tokenizer is not None or recorded_tokenizer(ckpt_dir) is not None:
        load_tokenizer(ckpt_dir, tokenizer).save(out_dir)
    return model


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hope.hf", description="transformers integration tools")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="train.py checkpoint -> save_pretrained folder (safetensors)")
    c.add_argument("ckpt_dir")
    c.add_argument("out_dir")
    c.add_argument("--tokenizer", default=None,
                   help="tokenizer spec (byte or a tokenizer.json path) for checkpoints that record none")
    args = p.parse_args(argv)
    model = convert(args.ckpt_dir, args.out_dir, args.tokenizer)
    n = sum(t.numel() for t in model.parameters())
    has_tok = (Path(args.out_dir) / "tokenizer.json").is_file()
    print(f"wrote {args.out_dir} ({n / 1e6:.2f}M parameters, model_type=hope" +
          (", with its tokenizer)" if has_tok else "; no tokenizer recorded: pass --tokenizer for lm-eval's hf)"))


if __name__ == "__main__":
    main()
