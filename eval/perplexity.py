"""Perplexity and bits per byte of documents, with the recurrent state carried across windows.

Every document starts from a fresh state and is prefixed with the tokenizer's EOT token (lm-eval's rolling
convention: the first token is predicted from the prefix). Two ways to score a document longer than a window:

* ``carry`` (default for SMT/Titans): the document is fed ``window`` tokens at a time and the model state
  (memories, CMS levels, conv and KV caches) is passed from window to window, so every token is scored once
  with its whole history. By the streaming contract this equals a single pass over the whole document.
* ``disjoint`` (default for attention mixers, whose positions do not extend past the trained context):
  lm-eval's ``loglikelihood_rolling`` windows (``get_rolling_token_windows`` with ``context_len=1`` made
  disjoint), each window from a fresh state; identical to lm-eval's numbers.

Reported: token perplexity, word perplexity (lm-eval's ``word_perplexity``: words of the raw page), byte
perplexity and bits per byte.

    python -m eval.perplexity --checkpoint runs/tiny/final --corpus wikitext --limit 20
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eval.data import load_corpus
from eval.scoring import Tokenizer, add_model_args, forward_windows, load_model_and_tokenizer, score_requests


def rolling_windows(tokens: list[int], prefix: int, max_len: int) -> list[tuple[list[int], list[int]]]:
    """lm-eval's ``get_rolling_token_windows(context_len=1)`` + ``make_disjoint_window``: ``(context,
    continuation)`` pairs that predict every token once, each input at most ``max_len`` tokens."""
    if not tokens:
        return []
    first = min(max_len, len(tokens))
    out = [([prefix], tokens[:first])]
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_len)
        end = done + n
        inp, pred = tokens[end - max_len - 1 : end - 1], tokens[end - n : end]
        out.append((inp[: len(inp) - (n - 1)], pred))
        done = end
    return out


@torch.no_grad()
def carry_token_nll(
    model: nn.Module, docs: list[list[int]], prefix: int, window: int = 1024, batch_size: int = 8
) -> list[torch.Tensor]:
    """Per-token negative log-likelihood (nats, float64) of each token list, fed ``window`` tokens at a time with
    the state carried. Documents are batched (right-padded; rows are independent), each from a fresh state."""
    device = next(model.parameters()).device
    order = sorted(range(len(docs)), key=lambda i: -len(docs[i]))
    out = [torch.zeros(0, dtype=torch.float64)] * len(docs)
    for b in range(0, len(order), batch_size):
        idx = [i for i in order[b : b + batch_size] if docs[i]]
        if not idx:
            continue
        width = len(docs[idx[0]])
        x = torch.zeros(len(idx), width, dtype=torch.long)
        y = torch.full((len(idx), width), -100, dtype=torch.long)
        for r, i in enumerate(idx):
            seq = [prefix] + docs[i]
            x[r, : len(seq) - 1] = torch.tensor(seq[:-1])
            y[r, : len(seq) - 1] = torch.tensor(seq[1:])
        x, y = x.to(device), y.to(device)
        state, parts = None, []
        for s in range(0, width, window):
            logits, state = forward_windows(model, x[:, s : s + window], None, state)
            tgt = y[:, s : s + window]
            nll = F.cross_entropy(logits.float().transpose(1, 2), tgt.clamp(min=0), reduction="none")
            parts.append(nll.double().cpu())
        nll = torch.cat(parts, dim=1)
        for r, i in enumerate(idx):
            out[i] = nll[r, : len(docs[i])]  # padding may hold anything, even NaN: cut before summing
    return out


def carry_loglikelihoods(
    model: nn.Module, docs: list[list[int]], prefix: int, window: int = 1024, batch_size: int = 8
) -> list[float]:
    """Summed log-likelihood of each token list (:func:`carry_token_nll`)."""
    return [-float(n.sum()) for n in carry_token_nll(model, docs, prefix, window, batch_size)]


def disjoint_loglikelihoods(
    model: nn.Module, docs: list[list[int]], prefix: int, max_len: int, batch_tokens: int = 16384
) -> list[float]:
    """lm-eval's rolling log-likelihood: disjoint windows of ``max_len``, each scored from a fresh state."""
    reqs, owner = [], []
    for i, d in enumerate(docs):
        for w in rolling_windows(d, prefix, max_len):
            reqs.append(w)
            owner.append(i)
    out = [0.0] * len(docs)
    for i, (ll, _) in zip(owner, score_requests(model, reqs, max_length=max_len, batch_tokens=batch_tokens)):
        out[i] += ll
    return out


def evaluate(
    model: nn.Module,
    tok: Tokenizer,
    docs: list[dict[str, str]],
    *,
    mode: str = "carry",
    window: int = 1024,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Perplexities of ``docs`` (``{"page", "text"}``: ``text`` is scored, words are counted on ``page`` as
    lm-eval's wikitext does). ``mode``: ``carry`` or ``disjoint`` (``window`` = lm-eval's max length)."""
    toks = [tok.encode(d["text"]) for d in docs]
    t0 = time.perf_counter()
    if mode == "carry":
        lls = carry_loglikelihoods(model, toks, tok.eos_id, window, batch_size)
    elif mode == "disjoint":
        lls = disjoint_loglikelihoods(model, toks, tok.eos_id, window)
    else:
        raise ValueError(f"mode must be 'carry' or 'disjoint', got {mode!r}")
    seconds = time.perf_counter() - t0
    ll, n_tok = sum(lls), sum(len(t) for t in toks)
    n_bytes = sum(len(d["text"].encode("utf-8")) for d in docs)
    n_words = sum(len(re.split(r"\s+", d["page"])) for d in docs)
    return {
        "token_perplexity": math.exp(-ll / max(n_tok, 1)),
        "word_perplexity": math.exp(-ll / max(n_words, 1)),
        "byte_perplexity": math.exp(-ll / max(n_bytes, 1)),
        "bits_per_byte": -ll / max(n_bytes, 1) / math.log(2),
        "tokens": n_tok,
        "bytes": n_bytes,
        "words": n_words,
        "docs": len(docs),
        "mode": mode,
        "window": window,
        "seconds": seconds,
        "tokens_per_s": n_tok / max(seconds, 1e-9),
        "doc_loglikelihoods": lls,
    }


def default_mode(mixer: str) -> str:
    return "disjoint" if mixer == "attention" else "carry"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Rolling perplexity / bits per byte with the state carried.")
    p.add_argument("--checkpoint", required=True)
    add_model_args(p)
    p.add_argument(
        "--corpus",
        default="wikitext",
        help="wikitext (hub; offline substitute pydoc), pydoc, or comma-separated .txt/.jsonl files",
    )
    p.add_argument("--limit", type=int, default=None, help="first N documents")
    p.add_argument("--mode", default=None, choices=["carry", "disjoint"], help="default: by mixer")
    p.add_argument(
        "--window", type=int, default=None, help="window length (default: the model's max_seq_len)"
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--data", default="auto", choices=["auto", "hub", "local"])
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    cfg, model, tok = load_model_and_tokenizer(args.checkpoint, args.tokenizer, args.allow_tokenizer_mismatch,
                                               args.device)
    docs, label = load_corpus(args.corpus, args.limit, args.data)
    res = evaluate(
        model,
        tok,
        docs,
        mode=args.mode or default_mode(cfg.mixer),
        window=args.window or cfg.max_seq_len,
        batch_size=args.batch_size,
    )
    res.pop("doc_loglikelihoods")
    res["corpus"] = label
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
