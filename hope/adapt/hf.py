"""Converted models stay ``transformers`` models: one registered subclass per family, and a cache for CMS state.

For a family such as ``LlamaForCausalLM`` the converted model is an instance of ``CMSLlamaForCausalLM`` (a
subclass: every method of the original still applies) whose config, a ``LlamaConfig`` subclass with
``model_type="llama_hope_cms"``, carries the conversion in ``hope_cms`` (:class:`~hope.adapt.mlp.AdaptSpec`).
Both are registered with the Auto classes, so ``AutoModelForCausalLM.from_pretrained`` rebuilds the CMS modules
and loads their safetensors weights (``import hope.adapt`` first). The recurrent CMS state rides along the
model's own KV cache in a :class:`CMSCache` (a ``DynamicCache``), so ``generate`` and streaming calls carry it.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache

from hope.adapt.mlp import CMSMLP, AdaptSpec, install
from hope.adapt.trainable import set_trainable
from hope.model import select_state


def _select(state: Any, idx: torch.Tensor) -> Any:
    return select_state(state, idx)  # knows the CMSLevelState layout (batch axis 0 once per sequence)


class CMSCache(DynamicCache):
    """A ``DynamicCache`` that also holds the CMS state of the converted layers (``cms_state``: one list of
    level states per converted layer; ``None`` before the first forward). Beam search reorders both."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cms_state: list | None = None

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        super().reorder_cache(beam_idx)
        self.cms_state = _select(self.cms_state, beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self.cms_state = _select(self.cms_state, indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        batch = self.layers[0].keys.shape[0] if self.get_seq_length() > 0 else None
        super().batch_repeat_interleave(repeats)
        if batch is not None:
            self.cms_state = _select(self.cms_state, torch.arange(batch).repeat_interleave(repeats))

    def crop(self, tokens_to_remove: int) -> None:
        if self.cms_state is not None:
            raise NotImplementedError("a CMS state cannot be rolled back (the levels have already learned from "
                                      "those tokens); assisted or speculative decoding is not supported")
        super().crop(tokens_to_remove)


class CMSAdaptedMixin:
    """Placed before the original model class: rebuilds the CMS modules from ``config.hope_cms`` and carries their
    state through the cache."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        spec = self.hope_spec
        install(self, spec)  # structure only; from_pretrained loads the weights
        set_trainable(self, spec.train)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """The original ``from_pretrained``, then the recorded ``train`` choice (loading replaces parameters)."""
        model = super().from_pretrained(*args, **kwargs)
        set_trainable(model, model.hope_spec.train)
        return model

    @property
    def hope_spec(self) -> AdaptSpec:
        return AdaptSpec.from_dict(self.config.hope_cms)

    def cms_modules(self) -> list[CMSMLP]:
        return [m for m in self.modules() if isinstance(m, CMSMLP)]

    @property
    def blocks(self) -> torch.nn.ModuleList:
        """The decoder layers (what train.py compiles, checkpoints and shards per block)."""
        return self.get_submodule(_layers_path(self))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _prepare_cache_for_generation(self, generation_config: Any, model_kwargs: dict, *args: Any,
                                      **kwargs: Any) -> Any:
        """``generate`` builds a :class:`CMSCache` where it would build a plain ``DynamicCache``."""
        out = super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)
        cache = model_kwargs.get("cache")
        plain = generation_config.cache_implementation in (None, "dynamic")
        if plain and type(cache) is DynamicCache and not getattr(cache, "_is_user_defined", False):
            model_kwargs["cache"] = CMSCache(config=self.config.get_text_config(decoder=True))
        return out

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The original forward, with the CMS state read from and written to the cache (:class:`CMSCache`).

        A call without a cache starts every level from its meta-learned weights; passing the returned cache back
        continues the stream (one call over a sequence equals several calls over its pieces)."""
        params = inspect.signature(super().forward).parameters
        kwargs.update(zip(list(params)[: len(args)], args))
        cache = kwargs.pop("cache", None)
        legacy = kwargs.pop("past_key_values", None)
        cache = legacy if cache is None else cache
        use_cache = kwargs.get("use_cache")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        in_context = self.hope_spec.in_context
        mask = kwargs.get("attention_mask")
        if in_context and mask is not None and mask.dim() == 2 and not bool(mask.all()):
            raise ValueError("a CMS-converted model with in-context levels does not support padding in the "
                             "attention mask: the levels would learn from the pad tokens; batch prompts of equal "
                             "length or run them one at a time")
        if cache is None and use_cache:
            cache = CMSCache(config=self.config.get_text_config(decoder=True))
        state = None
        if cache is not None:
            if isinstance(cache, CMSCache):
                state = cache.cms_state
            elif in_context:
                raise TypeError(f"a CMS-converted model carries its CMS state in a hope.adapt.CMSCache, not a "
                                f"{type(cache).__name__} (static and quantized caches are not supported)")
            if state is None and in_context and cache.get_seq_length() > 0:
                raise ValueError("the cache holds tokens but no CMS state: it was not filled by this model")
        modules = self.cms_modules()
        for i, m in enumerate(modules):
            m.state_in = None if state is None else state[i]
        out = super().forward(**kwargs, **{"cache" if "cache" in params else "past_key_values": cache})
        if isinstance(cache, CMSCache):
            cache.cms_state = [m.state_out for m in modules]
        for m in modules:  # state_in stays: a checkpointed layer re-reads it when it recomputes in the backward
            m.state_out = None
        return out


def _layers_path(model: torch.nn.Module) -> str:
    cms = next(n for n, m in model.named_modules() if isinstance(m, CMSMLP))
    return cms.rsplit(".", 3)[0]  # "<layers>.<i>.mlp" -> "<layers>"


_CLASSES: dict[type, type] = {}


def adapted_class(base: type) -> type:
    """The converted counterpart of a ``transformers`` causal-LM class (created and registered once)."""
    if issubclass(base, CMSAdaptedMixin):
        return base
    if base in _CLASSES:
        return _CLASSES[base]
    base_cfg = base.config_class
    model_type = f"{base_cfg.model_type}_hope_cms"
    cfg_cls = type(f"CMS{base_cfg.__name__}", (base_cfg,), {"model_type": model_type, "__module__": __name__})
    keep = sorted({*(base._keep_in_fp32_modules_strict or ()), "cms"})  # in-context levels keep fp32 weights
    cls = type(f"CMS{base.__name__}", (CMSAdaptedMixin, base),
               {"config_class": cfg_cls, "__module__": __name__, "_keep_in_fp32_modules_strict": keep})
    AutoConfig.register(model_type, cfg_cls, exist_ok=True)
    AutoModelForCausalLM.register(cfg_cls, cls, exist_ok=True)
    _CLASSES[base] = cls
    return cls


#: families registered at import, so their converted checkpoints load with AutoModelForCausalLM in a new process
KNOWN_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gpt2")


def register(model_type: str) -> type:
    """Register the converted class of a family by its ``model_type`` (e.g. ``"llama"``); returns it."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    base = MODEL_FOR_CAUSAL_LM_MAPPING[AutoConfig.for_model(model_type).__class__]
    return adapted_class(base)


for _family in KNOWN_FAMILIES:
    try:
        register(_family)
    except (KeyError, ValueError):  # a family this transformers version does not have: nothing to load
        pass
