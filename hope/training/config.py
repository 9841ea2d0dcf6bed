"""TrainConfig: every knob of ``train.py``, and loading a run's YAML (``model:`` + ``train:`` sections).

A run config is one YAML file::

    model: {preset: tiny}            # a HopeConfig preset plus field overrides (see ``python -m hope``)
    train: {seq_len: 256, max_steps: 300}

``--set key=value`` overrides a ``train`` field (``lr=1e-3``) or a model field (``model.dim=64``); values
are parsed as YAML (``true``, ``[1, 2]``, ``null``). Unknown keys raise ``KeyError`` naming the valid ones.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import yaml

from hope.config import HopeConfig

PARALLEL = ("auto", "none", "ddp", "fsdp")
DTYPES = ("auto", "float32", "bfloat16")


@dataclasses.dataclass
class TrainConfig:
    """Training hyper-parameters. Defaults follow the paper's recipe (AdamW, peak lr 4e-4, cosine)."""

    # data
    data: str = "shakespeare"  # "shakespeare", local file/dir/glob (txt, md, jsonl, parquet) or a HF dataset
    data_config: str | None = None  # HF dataset configuration (e.g. "sample-10BT" for FineWeb-Edu)
    data_split: str = "train"
    text_field: str = "text"  # the text column of jsonl / parquet / HF datasets
    streaming: bool = False  # stream a HF dataset (large corpora); held out: the first val_tokens of it
    val_fraction: float = 0.05  # share of documents held out (stable content hash), finite corpora
    val_tokens: int = 65536  # held-out tokens scored at each evaluation (and collected when streaming)
    tokenizer: str = "byte"  # "byte" or a Hugging Face tokenizer (path to tokenizer.json / dir, or hub name)
    cache_dir: str = "~/.cache/hope"  # downloaded and tokenized corpora
    seq_len: int = 256
    # batch and schedule
    batch_size: int = 8  # sequences per micro-batch per process
    batch_tokens: int = 0  # tokens per optimizer step, all processes; 0 = one micro-batch per process
    max_steps: int = 1000
    warmup_steps: int = 100
    # optimizer
    optimizer: str = "adamw"  # adamw, muon, m3, assoc_momentum, dmgd, sgd (the last five need hope.optim)
    lr: float = 4e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.1  # on matrices only
    betas: tuple = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables
    optimizer_kwargs: dict = dataclasses.field(default_factory=dict)
    # system
    device: str = "auto"  # auto: cuda when available, else cpu
    dtype: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile each block, and the memory ops' per-chunk functions (HOPE_COMPILE_CHUNKS)
    activation_checkpointing: bool = False  # recompute each block in the backward
    parallel: str = "auto"  # auto: fsdp under torchrun with more than one process; none, ddp, fsdp
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms (bitwise resume on CPU)
    gc_every: int = 50  # Python's garbage collector: off in the steps, run every gc_every steps; 0: automatic
    # continual pretraining of a transformers model converted by hope.adapt (the model section is then unused)
    init_from: str = ""  # a save_pretrained folder written by `python -m hope.adapt convert` (or cmsify)
    # checkpoints
    out_dir: str = ""  # default: runs/<config file name>
    ckpt_every: int = 200  # steps; 0: only at the end
    keep_last: int = 2
    resume: str = "auto"  # auto (latest checkpoint in out_dir, if any), none, or a checkpoint directory
    # logging and evaluation
    log_every: int = 10
    eval_every: int = 0  # steps; 0: only at the end
    progress: bool = True  # tqdm progress bar (else a log line every log_every steps)
    wandb_project: str | None = None  # set to log to Weights & Biases
    wandb_mode: str = "offline"
    sample_tokens: int = 200  # generated at the end of training (0: none)
    sample_prompt: str = ""  # empty: start of a document
    sample_temperature: float = 0.8
    sample_top_k: int = 50
    max_bad_steps: int = 5  # abort after this many non-finite losses in a row
    debug_nan_steps: list = dataclasses.field(default_factory=list)  # testing: NaN loss at these steps

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        problems = []
        if self.parallel not in PARALLEL:
            problems.append(f"parallel={self.parallel!r} (expected one of {PARALLEL})")
        if self.dtype not in DTYPES:
            problems.append(f"dtype={self.dtype!r} (expected one of {DTYPES})")
        for name in ("seq_len", "batch_size", "max_steps", "max_bad_steps", "log_every"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("batch_tokens", "warmup_steps", "ckpt_every", "keep_last", "eval_every", "val_tokens",
                     "sample_tokens", "gc_every"):
            if int(getattr(self, name)) < 0:
                problems.append(f"{name}={getattr(self, name)} must be >= 0")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction={self.val_fraction} must lie in [0, 1)")
        if self.lr <= 0:
            problems.append(f"lr={self.lr} must be > 0")
        if self.keep_last < 1:
            problems.append(f"keep_last={self.keep_last} must be >= 1")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict; an unknown key names itself and the valid keys; values are type-checked."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise KeyError(f"unknown train config key(s) {unknown}; valid keys: {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _coerce(k, v, hints[k]) for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's type (ints are accepted for floats)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    base = typing.get_origin(base) or base
    if value is None and optional:
        return None
    if base is float and isinstance(value, str):  # YAML reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if base is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if base is tuple and isinstance(value, list | tuple):
        return tuple(value)
    if base is int and isinstance(value, bool) or not isinstance(value, base):
        raise TypeError(f"train config key {name!r} expects {getattr(base, '__name__', base)}, "
                        f"got {value!r} ({type(value).__name__})")
    return value


def parse_overrides(items: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``["lr=1e-3", "model.dim=64"]`` into (train overrides, model overrides)."""
    train, model = {}, {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw else ""
        key = key.strip()
        if key.startswith("model."):
            model[key[len("model."):]] = value
        else:
            train[key.removeprefix("train.")] = value
    return train, model


def load_run_config(path: str | Path | None, overrides: list[str] = ()) -> tuple[dict[str, Any], TrainConfig]:
    """Read a run YAML (or JSON) and apply ``--set`` overrides.

    Returns ``(model_section, train_config)``: the model section stays a dict (``preset`` plus field
    overrides) so the caller can tell whether ``vocab_size`` was set explicitly; build it with
    :func:`build_model_config`.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        text = path.read_text()
        data = (yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping with 'model' and 'train' sections")
        unknown = sorted(set(data) - {"model", "train"})
        if unknown:
            raise KeyError(f"{path}: unknown section(s) {unknown}; valid sections: ['model', 'train']")
    train_over, model_over = parse_overrides(list(overrides))
    model = {**(data.get("model") or {}), **model_over}
    train = {**(data.get("train") or {}), **train_over}
    return model, TrainConfig.from_dict(train)


def build_model_config(section: dict[str, Any], vocab_size: int) -> HopeConfig:
    """HopeConfig from a model section; the vocabulary follows the tokenizer (``vocab_size``).

    An explicit ``vocab_size`` smaller than the tokenizer's is an error; a larger one is kept (padding).
    """
    section = dict(section)
    explicit = section.get("vocab_size")
    if explicit is not None and int(explicit) < vocab_size:
        raise ValueError(f"model.vocab_size={explicit} is smaller than the tokenizer's vocabulary "
                         f"({vocab_size} tokens); remove vocab_size from the model section to follow "
                         "the tokenizer")
    section.setdefault("vocab_size", vocab_size)
    preset = section.pop("preset", None)
    return HopeConfig.from_name(preset, **section) if preset else HopeConfig.from_dict(section)
