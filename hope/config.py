"""HopeConfig: one dataclass for HOPE, Hope-Attention, Titans and Transformer++, with named presets.

``python -m hope`` prints the preset table (parameters counted on the meta device) and the
per-sequence fast-state memory at T = 4096.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

MIXERS = ("smt", "titans", "attention")
BACKENDS = ("naive", "chunk", "triton", "auto")


@dataclasses.dataclass
class HopeConfig:
    """Model configuration. Every modelling choice of docs/semantics.md that is cheap to switch is a field."""

    name: str = "custom"
    vocab_size: int = 32000
    dim: int = 1024
    n_layers: int = 24
    n_heads: int = 8
    mixer: str = "smt"  # "smt" (self-modifying Titans), "titans" (static k/v) or "attention"
    # self-modifying Titans
    memory_hidden_mult: float = 1.0  # memory hidden width h = mult * head_dim
    memory_act: str = "silu"
    chunk_memory: int = 16  # chunk size of the main memory M_mem
    chunk_other: int = 64  # chunk size of the key/value memories M_k, M_v
    dgd: bool = True  # False: plain GD with decay (paper Table 6, "DGD -> plain GD")
    momentum: bool = True  # chunk-level momentum (paper Table 6, "w/o momentum")
    # this code's modelling choices beyond the paper (docs/semantics.md, "The SMT update rule"); False = ablation
    dgd_damping: bool = True  # damp the hidden layer's DGD target by 1 + ||W1 diag(s'(z))||_F^2
    unit_targets: bool = True  # L2-normalize the self-generated targets M_0(v)
    velocity_decay: bool = True  # the velocity collects the weights' change incl. retention (False: steps only)
    conv_size: int = 4
    eta_init: float = 0.3  # initial inner learning rate (sigmoid gate)
    alpha_init: float = 0.99  # initial retention
    beta_init: float = 0.5  # initial momentum
    # continuum memory system: one level per entry, fastest first; None = static MLP
    cms_chunk_sizes: tuple = (64, 512, None)
    cms_hidden: int = 1024  # SwiGLU hidden width of each level
    cms_objective: str = "assoc"
    cms_step_init: float = 0.1  # initial eta_l * C_l (the summed step is large for big chunks)
    cms_first_order: bool = False  # stop-gradient on the CMS inner gradient (no second-order outer backward)
    cms_unit_kv: bool = True  # L2-normalized keys and values of the associative CMS objective
    # attention
    rope_theta: float = 10000.0
    # misc
    norm_eps: float = 1e-6
    tie_embeddings: bool = False
    init_std: float = 0.02
    max_seq_len: int = 4096
    backend: str = "auto"

    def __post_init__(self) -> None:
        self.cms_chunk_sizes = tuple(self.cms_chunk_sizes)
        problems = []
        if self.mixer not in MIXERS:
            problems.append(f"mixer={self.mixer!r} (expected one of {MIXERS})")
        if self.backend not in BACKENDS:
            problems.append(f"backend={self.backend!r} (expected one of {BACKENDS})")
        if self.dim % self.n_heads:
            problems.append(f"dim={self.dim} is not divisible by n_heads={self.n_heads}")
        if self.cms_objective != "assoc":
            problems.append(f"cms_objective={self.cms_objective!r} (only 'assoc' is implemented)")
        if not self.cms_chunk_sizes:
            problems.append("cms_chunk_sizes is empty (use (None,) for one static MLP)")
        for c in self.cms_chunk_sizes:
            if c is not None and (not isinstance(c, int) or c < 1):
                problems.append(f"cms chunk size {c!r} must be a positive int or None")
        for name in ("chunk_memory", "chunk_other", "n_layers", "vocab_size", "conv_size"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("eta_init", "alpha_init", "beta_init"):
            if not 0.0 < getattr(self, name) < 1.0:
                problems.append(f"{name}={getattr(self, name)} must lie in (0, 1)")
        if problems:
            raise ValueError("invalid HopeConfig: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def memory_hidden(self) -> int:
        return max(1, int(round(self.memory_hidden_mult * self.head_dim)))

    # ---- construction and I/O -------------------------------------------------------------------------
    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> HopeConfig:
        """A named preset (see :data:`PRESETS`), with optional field overrides."""
        if name not in PRESETS:
            raise KeyError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], "name": name, **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HopeConfig:
        """Build from a dict; an unknown key is an error that names it and the valid keys."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise KeyError(f"unknown HopeConfig key(s) {unknown}; valid keys: {sorted(valid)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cms_chunk_sizes"] = list(self.cms_chunk_sizes)
        return d

    @classmethod
    def load(cls, path: str | Path) -> HopeConfig:
        """Load JSON or YAML. A YAML file may name a ``preset`` and override some of its fields; a
        ``model:`` section is used when present (so training YAMLs can hold other sections too)."""
        path = Path(path)
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        data = dict(data.get("model", data))
        preset = data.pop("preset", None)
        return cls.from_name(preset, **data) if preset else cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            path.write_text(json.dumps(self.to_dict(), indent=2))


def _preset(mixer: str, dim: int, n_layers: int, n_heads: int, cms_hidden: int, **kw: Any) -> dict[str, Any]:
    cms = kw.pop("cms_chunk_sizes", (None,) if mixer != "smt" else (64, 512, None))
    return dict(mixer=mixer, dim=dim, n_layers=n_layers, n_heads=n_heads, cms_hidden=cms_hidden,
                cms_chunk_sizes=cms, **kw)


TINY = dict(vocab_size=256, max_seq_len=1024)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": _preset("smt", 128, 3, 4, 256, cms_chunk_sizes=(32, 128, None), chunk_memory=32, chunk_other=64,
                    **TINY),
    "titans-tiny": _preset("titans", 128, 5, 4, 512, chunk_memory=16, **TINY),
    "transformer-tiny": _preset("attention", 128, 6, 4, 448, **TINY),
    "hope-attention-tiny": _preset("attention", 128, 4, 4, 192, cms_chunk_sizes=(32, 128, None), **TINY),
    "hope-340m": _preset("smt", 1024, 15, 8, 960),
    "hope-760m": _preset("smt", 1536, 16, 12, 1408),
    "hope-1.3b": _preset("smt", 2048, 16, 16, 1856),
    "titans-340m": _preset("titans", 1024, 19, 8, 2816),
    "titans-760m": _preset("titans", 1536, 21, 12, 4096),
    "titans-1.3b": _preset("titans", 2048, 21, 16, 5632),
    "transformer-340m": _preset("attention", 1024, 22, 16, 2816),
    "transformer-760m": _preset("attention", 1536, 23, 16, 4096),
    "transformer-1.3b": _preset("attention", 2048, 23, 16, 5632),
}
"""Preset fields. Sizes (width, depth, hidden) are chosen so the parameter count, embeddings included,
lies within 5% of the name; ``tests/test_config.py`` checks it on the meta device."""


def nominal_params(name: str) -> float | None:
    """The parameter count a preset's name promises (None for the tiny presets, 1-3M)."""
    tail = name.rsplit("-", 1)[-1]
    if tail.endswith("m"):
        return float(tail[:-1]) * 1e6
    if tail.endswith("b"):
        return float(tail[:-1]) * 1e9
    return None


def fast_state_bytes(cfg: HopeConfig, seq_len: int = 4096, bytes_per: int = 4) -> dict[str, float]:
    """Per-sequence memory of the in-context state, in bytes (fp32 fast weights).

    ``state``: the fast weights held while streaming (SMT memories with momentum, in-context CMS levels).
    ``chunk_states``: what one layer's backward keeps of the state, per chunk (T/C chunks): the chunk-start
    weights, plus the incoming velocity with momentum. The token-level intermediates come on top; per-layer
    activation checkpointing keeps all this for one layer at a time.
    """
    h, d, H = cfg.memory_hidden, cfg.head_dim, cfg.n_heads
    mem = 2 * H * d * h  # one memory (W1, W2), all heads
    state, chunk_states = 0.0, 0.0
    if cfg.mixer in ("smt", "titans"):
        n_mem = 3 if cfg.mixer == "smt" else 1
        copies = 3 if cfg.momentum else 2  # current, anchor, velocity
        state += cfg.n_layers * n_mem * mem * copies
        kept = 2 if cfg.momentum else 1  # anchor (chunk-start weights) and incoming velocity
        chunk_states += kept * mem * -(-seq_len // cfg.chunk_memory)
        if cfg.mixer == "smt":
            chunk_states += kept * 2 * mem * -(-seq_len // cfg.chunk_other)
    level = 3 * cfg.dim * cfg.cms_hidden
    for c in cfg.cms_chunk_sizes:
        if c is not None:
            state += cfg.n_layers * level * 2  # weights and the partial-chunk gradient sum
            chunk_states += level * -(-seq_len // c)
    return {"state": state * bytes_per, "chunk_states": chunk_states * bytes_per}


def preset_table(seq_len: int = 4096) -> str:
    """Markdown table of every preset: shape, CMS levels, parameter count and fast-state memory."""
    import torch

    from hope.model import HopeLM

    rows = ["| preset | mixer | layers | width | heads | CMS chunk sizes | CMS hidden | params | "
            f"fast state / seq | chunk states / layer / seq (T={seq_len}) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name in PRESETS:
        cfg = HopeConfig.from_name(name)
        with torch.device("meta"):
            n = sum(p.numel() for p in HopeLM(cfg).parameters())
        mem = fast_state_bytes(cfg, seq_len)
        chunks = ", ".join("static" if c is None else str(c) for c in cfg.cms_chunk_sizes)
        rows.append(f"| {name} | {cfg.mixer} | {cfg.n_layers} | {cfg.dim} | {cfg.n_heads} | {chunks} | "
                    f"{cfg.cms_hidden} | {n / 1e6:.1f}M | {mem['state'] / 2**20:.1f} MiB | "
                    f"{mem['chunk_states'] / 2**20:.1f} MiB |")
    return "\n".join(rows)

