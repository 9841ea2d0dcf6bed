"""The model + tokenizer loader of the evaluation command lines; the scorer is :mod:`hope.scoring` (re-exported
here for the evaluation modules)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hope.config import HopeConfig
from hope.model import HopeLM
from hope.scoring import Request, encode_pair, forward_windows, score_requests
from hope.training.checkpoint import load_model, load_tokenizer
from hope.training.tokenizer import Tokenizer

__all__ = ["Request", "Tokenizer", "add_model_args", "default_max_length", "encode_pair", "forward_windows",
           "load_model_and_tokenizer", "score_requests"]



# ---- model and tokenizer ----------------------------------------------------------------------------------
def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--tokenizer`` and ``--allow-tokenizer-mismatch``, shared by every evaluation command."""
    p.add_argument("--tokenizer", default=None,
                   help="default: the tokenizer the checkpoint was trained with (recorded in it); a different "
                        "one is refused unless --allow-tokenizer-mismatch")
    p.add_argument("--allow-tokenizer-mismatch", action="store_true",
                   help="evaluate with --tokenizer even though the checkpoint was trained with another")


def load_model_and_tokenizer(path: str | Path, tokenizer: str | None = None, allow_mismatch: bool = False,
                             device: str | torch.device = "cpu") -> tuple[HopeConfig, HopeLM, Tokenizer]:
    """A checkpoint (train.py checkpoint, run directory or ``hope.hf`` folder) in eval mode, with the tokenizer
    it was trained with (``hope.training.checkpoint``: the project's one reader of model folders)."""
    cfg, model = load_model(path, device)
    tok = load_tokenizer(path, tokenizer, allow_mismatch)
    if tok.vocab_size > cfg.vocab_size:
        raise ValueError(f"tokenizer {tok.name!r} has {tok.vocab_size} tokens but the model at {path} only "
                         f"{cfg.vocab_size}")
    return cfg, model, tok


def default_max_length(cfg: HopeConfig) -> int | None:
    """Left truncation length for scoring: the trained context for attention (its positions and KV cache do
    not extend), none for the recurrent mixers (their state carries any length)."""
    return cfg.max_seq_len if cfg.mixer == "attention" else None


