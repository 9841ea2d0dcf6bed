"""Test-time memorisation: held-out loss as a function of the position in a long document.

The paper's Fig. 10 claim is that HOPE keeps learning inside a document, so its loss keeps falling deeper into
it. Each held-out document (at least ``seq_len`` tokens, cut to ``seq_len``) is read ``window`` tokens at a time
with the state carried (``eval.perplexity.carry_token_nll``: SMT/CMS memories carry; attention keeps its KV cache,
so it sees the whole document too, past its trained length), and the per-token loss is averaged per position
bucket over documents.

    python -m eval.position_loss --checkpoint runs/tiny --checkpoint runs/transformer-tiny --seq-len 4096 \\
        --bucket 256 --out results/position
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eval.perplexity import carry_token_nll
from eval.scoring import Tokenizer, add_model_args, load_model_and_tokenizer


def position_loss(model: nn.Module, docs: list[list[int]], prefix: int, seq_len: int, bucket: int,
                  window: int = 1024, bytes_per_token: float = 1.0, batch_size: int = 4) -> list[dict[str, Any]]:
    """Mean next-token loss per position bucket ``[start, end)`` over ``docs`` (each cut to ``seq_len``).

    ``bytes_per_token``: for bits per byte (1 for a byte tokenizer); the first token is predicted from
    ``prefix`` (the EOT token), as in ``eval.perplexity``."""
    if seq_len < 1 or bucket < 1:
        raise ValueError(f"seq_len ({seq_len}) and bucket ({bucket}) must be positive")
    short = [i for i, d in enumerate(docs) if len(d) < seq_len]
    if short or not docs:
        raise ValueError(f"{len(short)} of {len(docs)} documents are shorter than seq_len={seq_len}"
                         if docs else "no documents")
    nll = torch.stack(carry_token_nll(model, [d[:seq_len] for d in docs], prefix, window, batch_size)).mean(0)
    out = []
    for start in range(0, seq_len, bucket):
        end = min(start + bucket, seq_len)
        loss = float(nll[start:end].mean())
        out.append({"start": start, "end": end, "loss": loss, "bpb": loss / math.log(2) / bytes_per_token})
    return out


def held_out_documents(tok: Tokenizer, seq_len: int, limit: int, data: str = "shakespeare",
                       val_fraction: float = 0.05) -> list[list[int]]:
    """The first ``limit`` documents of train.py's held-out split of ``data`` with at least ``seq_len`` tokens."""
    from hope.training.config import TrainConfig
    from hope.training.data import document_source, is_held_out

    cfg = TrainConfig(data=data, val_fraction=val_fraction)
    docs = []
    for text in document_source(cfg)():
        if is_held_out(text, val_fraction):
            ids = tok.encode(text)
            if len(ids) >= seq_len:
                docs.append(ids[:seq_len])
                if len(docs) == limit:
                    break
    if not docs:
        raise ValueError(f"no held-out document of {data!r} has {seq_len} tokens")
    return docs


def plot_position_loss(curves: dict[str, list[dict[str, Any]]], path: str | Path) -> None:
    """One line per model: bits per byte against the bucket's middle position."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, rows in curves.items():
        ax.plot([(r["start"] + r["end"]) / 2 for r in rows], [r["bpb"] for r in rows], marker="o", label=name)
    ax.set_xlabel("position in the document (tokens)")
    ax.set_ylabel("held-out bits per byte")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Held-out loss by position in long documents (paper Fig. 10).")
    p.add_argument("--checkpoint", action="append", required=True, help="repeatable: one curve per checkpoint")
    p.add_argument("--label", action="append", default=[], help="repeatable: the curves' names (default: the "
                   "configs' names), one per --checkpoint")
    add_model_args(p)
    p.add_argument("--data", default="shakespeare", help="corpus whose train.py held-out split is read")
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--bucket", type=int, default=256)
    p.add_argument("--documents", type=int, default=8)
    p.add_argument("--window", type=int, default=1024, help="tokens per forward (state carried between them)")
    p.add_argument("--out", default="results/position")
    args = p.parse_args(argv)
    if args.label and len(args.label) != len(args.checkpoint):
        p.error(f"{len(args.label)} --label for {len(args.checkpoint)} --checkpoint")
    curves, names, t0 = {}, {}, time.perf_counter()
    docs_by_tokenizer: dict[str, list[list[int]]] = {}  # the same documents, tokenized per checkpoint's tokenizer
    for i, ckpt in enumerate(args.checkpoint):
        cfg, model, tok = load_model_and_tokenizer(ckpt, args.tokenizer, args.allow_tokenizer_mismatch)
        key = tok.fingerprint()
        if key not in docs_by_tokenizer:
            docs_by_tokenizer[key] = held_out_documents(tok, args.seq_len, args.documents, args.data)
        docs = docs_by_tokenizer[key]
        name = args.label[i] if args.label else cfg.name if cfg.name not in curves else f"{cfg.name} ({ckpt})"
        bpt = 1.0 if tok.name == "byte" else float("nan")  # bits per byte needs the byte count: byte tokens only
        curves[name] = position_loss(model, docs, tok.eos_id, args.seq_len, args.bucket, args.window, bpt)
        names[name] = ckpt
        print(name, " ".join(f"{r['start']}:{r['bpb']:.3f}" for r in curves[name]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"checkpoints": names, "seq_len": args.seq_len, "bucket": args.bucket, "window": args.window,
           "documents": len(docs), "data": args.data, "seconds": time.perf_counter() - t0, "curves": curves}
    (out / "position_loss.json").write_text(json.dumps(res, indent=2))
    plot_position_loss(curves, out / "position_loss.png")
    print(f"wrote {out}/position_loss.json and position_loss.png")


if __name__ == "__main__":
    main()
