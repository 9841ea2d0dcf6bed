"""A pretrained block's MLP as a Continuum Memory System seeded from it (ad-hoc level stacking).

Behrouz et al., Nested Learning (arXiv 2512.24695), section 7.3: every CMS level starts from the pretrained
MLP, ``MLP^(f_l)_0 = MLP_pretrained``, so that with inner step size 0 the converted model is the pretrained
model. The levels read the host block's (already normalized) MLP input and their outputs are summed (the
independent CMS variant, Eq. 74, ``combine="sum"``); the host block keeps its own norm and residual. Two
seedings keep the sum equal to the MLP: ``"copy"`` (every level a full copy, its down projection and output
bias divided by the number of levels) and ``"split"`` (the hidden units dealt out among the levels).

MLP forms recognised: SwiGLU-style ``gate_proj``/``up_proj``/``down_proj`` linears (Llama, Qwen2, Mistral, ...)
and GPT-2's ``c_fc``/``c_proj`` Conv1D with GELU.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch
from torch import Tensor, nn

from hope.cms import CMSLevel, ContinuumMemorySystem

#: transformers activation names whose function a CMS level reproduces exactly
ACT_NAMES = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_new": "gelu_tanh",
             "gelu_pytorch_tanh": "gelu_tanh"}
SEEDS = ("copy", "split")
_LAYER_MLP = re.compile(r"^(.*)\.(\d+)\.mlp$")


@dataclasses.dataclass
class AdaptSpec:
    """What ``cmsify`` did, recorded in ``config.hope_cms`` so that ``from_pretrained`` rebuilds it.

    ``levels``: chunk sizes fastest first (``None`` = a static level); ``layers``: converted layer indices;
    ``hidden``: the width of each level; ``act``/``gated``/``bias``: the MLP form; ``train``: what the outer
    optimizer trains (``"cms"``, ``"cms+norms"`` or ``"all"``).
    """

    levels: list[int | None]
    layers: list[int]
    hidden: list[int]
    act: str
    gated: bool
    bias: bool
    seed: str = "copy"
    step_init: float = 0.0
    dropout: float = 0.0
    train: str = "cms"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdaptSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"config.hope_cms has unknown key(s) {unknown}; known: {sorted(fields)}")
        return cls(**d)

    @property
    def in_context(self) -> bool:
        """Whether any level learns in context (then the model carries a CMS state)."""
        return any(c is not None for c in self.levels)


def find_mlps(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    """``{layer index: (parent module, attribute name)}`` of every decoder layer's ``mlp``."""
    found = {}
    for name, _ in model.named_modules():
        m = _LAYER_MLP.match(name)
        if m is not None:
            found[int(m.group(2))] = (model.get_submodule(f"{m.group(1)}.{m.group(2)}"), "mlp")
    if not found:
        raise ValueError(f"{type(model).__name__} has no '<layers>.<i>.mlp' modules; hope.adapt converts "
                         "decoder models whose layers hold an 'mlp' (Llama, Qwen2, Mistral, GPT-2, ...)")
    return dict(sorted(found.items()))


@dataclasses.dataclass
class MLPWeights:
    """A pretrained MLP in the CMS level layout: ``w_* (out, in)``, optional biases, the form."""

    w_gate: Tensor | None
    w_up: Tensor
    w_down: Tensor
    b_gate: Tensor | None
    b_up: Tensor | None
    b_down: Tensor | None
    act: str
    dropout: float = 0.0

    @property
    def bias(self) -> bool:
        return self.b_up is not None


def _act_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or name not in ACT_NAMES:
        raise ValueError(f"{where}: activation {name!r} is not one a CMS level reproduces exactly; "
                         f"supported: {sorted(ACT_NAMES)}")
    return ACT_NAMES[name]


def read_mlp(mlp: nn.Module, config: Any) -> MLPWeights:
    """The weights and form of a SwiGLU-style (``gate_proj``, ``up_proj``, ``down_proj``) or GPT-2 (``c_fc``,
    ``c_proj``) MLP. Anything else is an error naming what was found."""
    kind = type(mlp).__name__
    if all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
        g, u, d = mlp.gate_proj, mlp.up_proj, mlp.down_proj
        if not all(isinstance(m, nn.Linear) for m in (g, u, d)):
            raise ValueError(f"{kind}: gate_proj/up_proj/down_proj must be nn.Linear")
        has_bias = g.bias is not None
        if has_bias != (u.bias is not None) or has_bias != (d.bias is not None):
            raise ValueError(f"{kind}: some projections have biases and some do not")
        act = _act_name(getattr(config, "hidden_act", getattr(config, "hidden_activation", None)), kind)
        return MLPWeights(g.weight, u.weight, d.weight, g.bias, u.bias, d.bias, act)
    if hasattr(mlp, "c_fc") and hasattr(mlp, "c_proj"):  # GPT-2 Conv1D: y = x @ W + b, W (in, out)
        fc, proj = mlp.c_fc, mlp.c_proj
        act = _act_name(getattr(config, "activation_function", None), kind)
        drop = mlp.dropout.p if isinstance(getattr(mlp, "dropout", None), nn.Dropout) else 0.0
        return MLPWeights(None, fc.weight.t(), proj.weight.t(), None, fc.bias, proj.bias, act, drop)
    children = sorted(n for n, _ in mlp.named_children())
    raise ValueError(f"cannot seed CMS levels from {kind} (children {children}); hope.adapt knows SwiGLU-style "
                     "MLPs (gate_proj, up_proj, down_proj) and GPT-2 MLPs (c_fc, c_proj)")


def level_widths(hidden: int, n_levels: int, seed: str) -> list[int]:
    """Each level's hidden width: the MLP's for ``copy``, a near-even share of it for ``split``."""
    if seed not in SEEDS:
        raise ValueError(f"unknown seed {seed!r}; expected one of {SEEDS}")
    if seed == "copy":
        return [hidden] * n_levels
    if hidden < n_levels:
        raise ValueError(f"seed='split' deals {hidden} hidden units to {n_levels} levels: too few")
    return [len(part) for part in torch.arange(hidden).tensor_split(n_levels)]


class CMSMLP(nn.Module):
    """Stands in for a block's MLP: ``dropout(cms(x))``, with the CMS state handed over by the model.

    The converted model sets ``state_in`` before each forward and reads ``state_out`` after it (the host
    block calls ``mlp(x)`` with no room for a state). The levels keep fp32 weights; the output has x's dtype.
    """

    def __init__(self, dim: int, spec: AdaptSpec) -> None:
        super().__init__()
        levels = [CMSLevel(c, hidden=h, step_init=spec.step_init, norm=False, act=spec.act, gated=spec.gated,
                           bias=spec.bias) for c, h in zip(spec.levels, spec.hidden)]
        self.cms = ContinuumMemorySystem(dim, levels, combine="sum")
        self.dropout = nn.Dropout(spec.dropout)
        self.state_in: list | None = None
        self.state_out: list | None = None

    def forward(self, x: Tensor) -> Tensor:
        dtype = self.cms.levels[0].w_down.dtype
        y, self.state_out = self.cms(x.to(dtype), self.state_in)
        return self.dropout(y.to(x.dtype))

    @torch.no_grad()
    def seed_from(self, w: MLPWeights, seed: str) -> None:
        """Copy (or deal out) the pretrained MLP into the levels; the level outputs sum to the MLP."""
        n = len(self.cms.levels)
        hidden = w.w_up.shape[0]
        parts = [torch.arange(hidden)] * n if seed == "copy" else list(torch.arange(hidden).tensor_split(n))
        for level, idx in zip(self.cms.levels, parts):
            rows = {"w_gate": w.w_gate, "w_up": w.w_up, "b_gate": w.b_gate, "b_up": w.b_up}
            for name, src in rows.items():
                if src is not None:
                    getattr(level, name).copy_(src[idx])
            level.w_down.copy_(w.w_down[:, idx] / (n if seed == "copy" else 1))
            if w.b_down is not None:
                level.b_down.copy_(w.b_down / n)


def spec_for(model: nn.Module, levels: list[int | None], layers: list[int], seed: str, step_init: float,
             train: str) -> tuple[AdaptSpec, dict[int, MLPWeights]]:
    """The :class:`AdaptSpec` of converting ``layers`` of ``model``, and the MLP weights to seed from."""
    mlps = find_mlps(model)
    missing = sorted(set(layers) - set(mlps))
    if missing:
        raise ValueError(f"layers {missing} do not exist; the model has layers {list(mlps)}")
    weights = {i: read_mlp(getattr(*mlps[i]), model.config) for i in layers}
    forms = {(w.act, w.w_gate is not None, w.bias, w.w_up.shape[0], w.dropout) for w in weights.values()}
    if len(forms) != 1:
        raise ValueError(f"the chosen layers' MLPs differ in form or width ({sorted(forms)}); one conversion "
                         "needs MLPs of one form (choose those layers with layers=[...])")
    act, gated, bias, hidden, dropout = forms.pop()
    spec = AdaptSpec(levels=list(levels), layers=list(layers), hidden=level_widths(hidden, len(levels), seed),
                     act=act, gated=gated, bias=bias, seed=seed, step_init=step_init, dropout=dropout, train=train)
    return spec, weights


def install(model: nn.Module, spec: AdaptSpec, weights: dict[int, MLPWeights] | None = None) -> list[CMSMLP]:
    """Replace the MLPs of ``spec.layers`` by :class:`CMSMLP` s (seeded from ``weights`` when given, else left
    at their initial values for a checkpoint to overwrite); returns them in layer order."""
    mlps = find_mlps(model)
    out = []
    for i in spec.layers:
        parent, attr = mlps[i]
        old = getattr(parent, attr)
        ref = next(old.parameters())
        new = CMSMLP(model.config.hidden_size, spec).to(device=ref.device).train(old.training)
        if weights is not None:
            new.seed_from(weights[i], spec.seed)
        setattr(parent, attr, new)
        out.append(new)
    return out
