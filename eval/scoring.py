"""Tokenizers, checkpoint loading and batched log-likelihood scoring shared by every evaluation.

``score_requests`` is the one scorer behind ``eval.commonsense``, the LAMBADA numbers and the lm-eval model in
``eval.harness``, so all of them give the same per-item log-likelihoods. It follows lm-eval's ``HFLM``
conventions exactly: the input is ``(context + continuation)[-(max_length + 1):][:-1]``, the score is the
summed log-probability of the continuation tokens and ``is_greedy`` says whether every one is the argmax.

Every request starts from a fresh model state (``state=None``: the meta-learned memories), so requests are
independent of each other and of their order. Rows of a batch are right-padded; the model is causal and its
state is per row, so padding never changes the scored positions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hope.config import HopeConfig
from hope.model import HopeLM

Request = tuple[list[int], list[int]]  # (context tokens, continuation tokens)


# ---- tokenizers --------------------------------------------------------------------------------------------
class Tokenizer(Protocol):
    eot_token_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """Token id = UTF-8 byte value (0..255). ``eot_token_id`` separates documents and is the prefix token of
    lm-eval's empty-context requests: id 256 when the vocabulary has room for it, else ``"\\n"`` (10)."""

    def __init__(self, vocab_size: int = 256, eot_token_id: int | None = None) -> None:
        if vocab_size < 256:
            raise ValueError(f"a byte tokenizer needs vocab_size >= 256, got {vocab_size}")
        self.vocab_size = vocab_size
        self.eot_token_id = eot_token_id if eot_token_id is not None else (256 if vocab_size > 256 else 10)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face tokenizer by name or path (no special tokens added; EOS is the document separator)."""

    def __init__(self, name: str) -> None:
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(name)
        self.vocab_size = len(self.tok)
        eot = self.tok.eos_token_id if self.tok.eos_token_id is not None else self.tok.bos_token_id
        if eot is None:
            raise ValueError(f"tokenizer {name!r} has neither an EOS nor a BOS token")
        self.eot_token_id = int(eot)

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids))


def load_tokenizer(spec: str, vocab_size: int = 256) -> Tokenizer:
    """``"bytes"`` (byte-level, for the tiny presets) or any Hugging Face tokenizer name or path."""
    return ByteTokenizer(vocab_size) if spec == "bytes" else HFTokenizer(spec)


# ---- checkpoints -------------------------------------------------------------------------------------------
def _strip_prefixes(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop wrapper prefixes (``_orig_mod.`` of torch.compile, ``module.`` of DDP, ``model.`` of hope.hf)."""
    out = {}
    for k, v in sd.items():
        for p in ("_orig_mod.", "module.", "model."):
            k = k[len(p) :] if k.startswith(p) else k
        out[k] = v
    return out


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[HopeConfig, HopeLM]:
    """Load ``<dir>/model.safetensors`` + ``<dir>/config.json`` (a train.py checkpoint, or a ``hope.hf``
    ``save_pretrained`` folder) into a :class:`HopeLM` in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg_dict = json.loads((path / "config.json").read_text())
    if cfg_dict.get("model_type") == "hope":  # saved by hope.hf: HopeConfig fields plus transformers' own
        fields = {f.name for f in dataclasses.fields(HopeConfig)}
        cfg_dict = {k: v for k, v in cfg_dict.items() if k in fields}
    cfg_dict = cfg_dict.get("model", cfg_dict)
    cfg = HopeConfig.from_dict(cfg_dict)
    model = HopeLM(cfg)
    sd = _strip_prefixes(load_file(str(path / "model.safetensors"), device="cpu"))
    if cfg.tie_embeddings:
        sd.setdefault("lm_head.weight", sd.get("embed.weight"))
    model.load_state_dict(sd, strict=True)
    return cfg, model.to(device).eval()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[HopeConfig, HopeLM]:
    """A checkpoint -> ``(HopeConfig, HopeLM)`` in eval mode. ``hope.training.checkpoint.load_model`` when the
    training package is present and ``path`` is a train.py checkpoint (manifest verified) or a run
    directory (its latest checkpoint); other folders go to :func:`read_checkpoint`."""
    path = Path(path)
    if (path / "model.safetensors").exists() and not (path / "manifest.json").exists():  # an exported folder
        return read_checkpoint(path, device)
    try:
        from hope.training.checkpoint import load_model as train_load_model
    except ImportError:
        return read_checkpoint(path, device)
    cfg, model = train_load_model(path, device)
    return cfg, model.eval()


def default_max_length(cfg: HopeConfig) -> int | None:
    """Left truncation length for scoring: the trained context for attention (its positions and KV cache do
    not extend), none for the recurrent mixers (their state carries any length)."""
    return cfg.max_seq_len if cfg.mixer == "attention" else None


# ---- scoring -----------------------------------------------------------------------------------------------
def encode_pair(tok: Tokenizer, context: str, continuation: str) -> Request:
    """lm-eval's ``TemplateLM`` encoding: trailing context whitespace moves to the continuation, the pair is
    encoded whole and split; an empty context becomes the prefix (EOT) token."""
    if context == "":
        cont = tok.encode(continuation)
        if cont and cont[0] == tok.eot_token_id:
            return cont[:1], cont[1:]
        return [tok.eot_token_id], cont
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok.encode(context + continuation)
    ctx = tok.encode(context)
    return ctx, whole[len(ctx) :]


def forward_windows(
    model: nn.Module, x: Tensor, window: int | None = None, state=None
) -> tuple[Tensor, list]:
    """Logits for ``x (B, T)`` computed ``window`` tokens at a time, carrying the recurrent state (equal to
    one call by the model's streaming contract; bounds activation memory for long inputs)."""
    if window is None or x.shape[1] <= window:
        out = model(x, state=state)
        return out.logits, out.state
    logits = []
    for s in range(0, x.shape[1], window):
        out = model(x[:, s : s + window], state=state)
        logits.append(out.logits)
        state = out.state
    return torch.cat(logits, dim=1), state


def _batches(lengths: list[int], batch_tokens: int, max_batch: int) -> list[list[int]]:
    """Greedy batches over indices already sorted by decreasing length, within a padded-token budget."""
    batches, cur = [], []
    for i in range(len(lengths)):
        if cur and ((len(cur) + 1) * lengths[cur[0]] > batch_tokens or len(cur) >= max_batch):
            batches.append(cur)
            cur = []
        cur.append(i)
    return batches + ([cur] if cur else [])


@torch.no_grad()
def score_requests(
    model: nn.Module,
    requests: Sequence[Request],
    *,
    max_length: int | None = None,
    batch_tokens: int = 16384,
    max_batch: int = 64,
    window: int | None = None,
    pad_id: int = 0,
) -> list[tuple[float, bool]]:
    """``(sum log p(continuation | context), is_greedy)`` for each request, each from a fresh state.

    Requests are deduplicated, sorted by length (longest first, ties by tokens: the batching does not depend
    on the input order) and right-padded into batches of at most ``batch_tokens`` padded tokens. """
    device = next(model.parameters()).device
    inputs: dict[tuple, tuple[list[int], int]] = {}
    keys = []
    for ctx, cont in requests:
        if not cont:
            raise ValueError("a request needs at least one continuation token")
        full = list(ctx) + list(cont)
        inp = full[-(max_length + 1) :][:-1] if max_length else full[:-1]
        key = (tuple(inp), tuple(cont))
        inputs[key] = (inp, len(cont))
        keys.append(key)
    uniq = sorted(inputs, key=lambda k: (-len(k[0]), k))
    lengths = [len(k[0]) for k in uniq]
    results: dict[tuple, tuple[float, bool]] = {}
    for batch in _batches(lengths, batch_tokens, max_batch):
        width = lengths[batch[0]]
        x = torch.full((len(batch), width), pad_id, dtype=torch.long)
        for r, i in enumerate(batch):
            inp = inputs[uniq[i]][0]
            x[r, : len(inp)] = torch.tensor(inp, dtype=torch.long)
        logits, _ = forward_windows(model, x.to(device), window)
        for r, i in enumerate(batch):
            inp, n = inputs[uniq[i]]
            cont = torch.tensor(uniq[i][1], device=device)
            lp = F.log_softmax(logits[r, len(inp) - n : len(inp)].float(), dim=-1)
            ll = lp.gather(-1, cont[:, None]).sum().item()
            results[uniq[i]] = (ll, bool((lp.argmax(-1) == cont).all()))
    return [results[k] for k in keys]
