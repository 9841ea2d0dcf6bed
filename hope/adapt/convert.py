"""``cmsify``: turn a pretrained ``transformers`` causal LM into a HOPE-style continual learner, in place.

Ad-hoc level stacking (Behrouz et al., Nested Learning, arXiv 2512.24695, section 7.3): each chosen block's MLP
becomes a Continuum Memory System whose levels are seeded from that MLP; with every inner step size at 0 the
converted model computes the original model's logits. ``train=`` then chooses what the outer optimizer trains.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hope.adapt.hf import CMSAdaptedMixin, adapted_class
from hope.adapt.mlp import find_mlps, install, spec_for
from hope.adapt.trainable import TRAIN, describe, set_trainable


def parse_levels(levels: Any) -> list[int | None]:
    """``[16, 512, None]`` or ``"16,512,static"``: chunk sizes fastest first, ``None``/``static`` = static."""
    if isinstance(levels, str):
        levels = [None if p.strip().lower() in ("static", "none", "") else int(p) for p in levels.split(",")]
    levels = list(levels)
    if not levels:
        raise ValueError("levels must name at least one CMS level")
    for c in levels:
        if c is not None and (not isinstance(c, int) or isinstance(c, bool) or c < 1):
            raise ValueError(f"a CMS level's chunk size must be a positive int or None (static), got {c!r}")
    return levels


def _layers(layers: Any, available: list[int]) -> list[int]:
    if layers == "all":
        return list(available)
    if isinstance(layers, str):
        layers = [int(p) for p in layers.split(",")]
    layers = sorted({int(i) for i in layers})
    if not layers:
        raise ValueError("layers must name at least one layer (or 'all')")
    return layers


def cmsify(model: nn.Module, levels: Any = (16, 512, None), layers: Any = "all", train: str = "cms",
           seed: str = "copy", step_init: float = 0.0, verbose: bool = True) -> nn.Module:
    """Convert ``model`` (a ``transformers`` causal LM: Llama/Qwen2/Mistral-style SwiGLU or GPT-2 MLPs) in place
    and return it.

    ``levels``: CMS chunk sizes fastest first, ``None`` for a static level (``"16,512,static"`` works too);
    ``layers``: ``"all"`` or layer indices; ``train``: see :func:`set_trainable`; ``seed``: ``"copy"`` (every
    level a copy of the MLP, outputs summed with weight 1/K) or ``"split"`` (the hidden units dealt out among the
    levels); ``step_init``: the initial ``eta * chunk_size`` of the in-context levels (0: the converted model
    computes the original logits exactly). The model's class becomes the registered converted subclass (e.g.
    ``CMSLlamaForCausalLM``) and ``config.hope_cms`` records the conversion, so ``save_pretrained`` /
    ``from_pretrained`` round-trip; the parameter counts are printed when ``verbose``.
    """
    if isinstance(model, CMSAdaptedMixin):
        raise ValueError("this model is already CMS-converted (config.hope_cms is set)")
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel) or not model.can_generate():
        raise TypeError(f"cmsify converts a transformers causal LM (e.g. from AutoModelForCausalLM), not a "
                        f"{type(model).__name__}")
    if train not in TRAIN:
        raise ValueError(f"unknown train={train!r}; expected one of {TRAIN}")
    if step_init < 0:
        raise ValueError(f"step_init must be >= 0, got {step_init}")
    spec, weights = spec_for(model, parse_levels(levels), _layers(layers, list(find_mlps(model))), seed,
                             float(step_init), train)
    cls = adapted_class(type(model))
    install(model, spec, weights)
    # the instance keeps its modules and weights; its class and its config's class gain the CMS subclass
    model.__class__ = cls
    model.config.__class__ = cls.config_class
    model.config.hope_cms = spec.to_dict()
    model.config.architectures = [cls.__name__]
    counts = set_trainable(model, train)
    if verbose:
        print(f"cmsify: {len(spec.layers)} layer(s), levels {spec.levels}, seed={seed}; {describe(counts, train)}")
    return model


def convert_folder(src: str, out: str, levels: Any = (16, 512, None), layers: Any = "all", train: str = "cms",
                   seed: str = "copy", step_init: float = 0.0) -> nn.Module:
    """A local ``save_pretrained`` folder converted and written to ``out`` (with its tokenizer, if it has one)."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not Path(src).is_dir():
        raise FileNotFoundError(f"{src!r} is not a local checkpoint folder (config.json + weights)")
    model = AutoModelForCausalLM.from_pretrained(src, dtype="float32")
    cmsify(model, levels, layers, train, seed, step_init)
    model.save_pretrained(out)
    if any((Path(src) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return model


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m hope.adapt", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="a local HF causal-LM folder -> a CMS-converted save_pretrained folder")
    c.add_argument("src_dir")
    c.add_argument("out_dir")
    c.add_argument("--levels", default="16,512,static", help="chunk sizes fastest first; 'static' for C=None")
    c.add_argument("--layers", default="all", help="'all' or comma-separated layer indices")
    c.add_argument("--train", default="cms", choices=TRAIN, help="what the outer optimizer trains")
    c.add_argument("--seed", default="copy", choices=("copy", "split"), help="how levels are seeded from the MLP")
    c.add_argument("--step-init", type=float, default=0.0, help="initial eta * chunk_size (0: exact original)")
    args = p.parse_args(argv)
    convert_folder(args.src_dir, args.out_dir, args.levels, args.layers, args.train, args.seed, args.step_init)
    print(f"wrote {args.out_dir} (load it after 'import hope.adapt' with AutoModelForCausalLM.from_pretrained)")
