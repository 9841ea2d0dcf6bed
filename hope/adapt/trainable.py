"""What the outer optimizer trains in a converted model: the CMS modules, plus the norms, or everything."""

from __future__ import annotations

from torch import nn

from hope.adapt.mlp import CMSMLP

TRAIN = ("cms", "cms+norms", "all")


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm | nn.RMSNorm) or type(module).__name__.endswith(("RMSNorm", "LayerNorm"))


def set_trainable(model: nn.Module, train: str = "cms") -> dict[str, int]:
    """``requires_grad`` for the outer optimizer: ``"cms"`` (the CMS modules only: the backbone is frozen),
    ``"cms+norms"`` (also every norm's weights) or ``"all"``. Returns the parameter counts."""
    if train not in TRAIN:
        raise ValueError(f"unknown train={train!r}; expected one of {TRAIN}")
    chosen = set()
    for module in model.modules():
        if train == "all" or isinstance(module, CMSMLP) or (train == "cms+norms" and _is_norm(module)):
            chosen |= {id(p) for p in module.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
    counts = {"total": 0, "trainable": 0, "cms": 0}
    cms = {id(p) for m in model.modules() if isinstance(m, CMSMLP) for p in m.parameters()}
    seen = set()
    for p in model.parameters():  # tied weights once
        if id(p) in seen:
            continue
        seen.add(id(p))
        counts["total"] += p.numel()
        counts["trainable"] += p.numel() if p.requires_grad else 0
        counts["cms"] += p.numel() if id(p) in cms else 0
    return counts


def describe(counts: dict[str, int], train: str) -> str:
    m = lambda n: f"{n / 1e6:.3f}M"  # noqa: E731
    return (f"trainable {m(counts['trainable'])} of {m(counts['total'])} parameters (train={train!r}; "
            f"CMS modules {m(counts['cms'])}, frozen {m(counts['total'] - counts['trainable'])})")
