"""Evaluation throughput: items per second for each task, and perplexity tokens per second, for presets
(random weights: the cost does not depend on the weights) or checkpoints. Prints a markdown table with the
machine.

    python -m eval.speed --presets tiny,transformer-tiny --limit 20
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from eval import commonsense, perplexity
from eval.data import load_corpus
from eval.scoring import add_model_args, default_max_length, load_model_and_tokenizer
from hope import HopeConfig, HopeLM
from hope.training.tokenizer import ByteTokenizer


def measure(
    model: torch.nn.Module,
    tok,
    tasks: list[str],
    limit: int,
    ppl_docs: int,
    max_length: int | None,
    window: int,
    mode: str,
) -> dict[str, float]:
    res = commonsense.run(model, tok, tasks, limit=limit, max_length=max_length)
    out = {t: r["items_per_s"] for t, r in res.items()}
    if ppl_docs:
        docs, _ = load_corpus("pydoc", ppl_docs)
        out["ppl tokens/s"] = perplexity.evaluate(model, tok, docs, mode=mode, window=window)["tokens_per_s"]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Evaluation throughput (items/s per task) on this machine.")
    p.add_argument("--presets", default="tiny,transformer-tiny", help="presets, random weights")
    p.add_argument("--checkpoint", nargs="*", default=[], help="checkpoints (instead of / besides presets)")
    add_model_args(p)
    p.add_argument("--tasks", default=",".join(commonsense.COMMONSENSE + ("lambada_openai",)))
    p.add_argument("--limit", type=int, default=20, help="items per task")
    p.add_argument(
        "--ppl-docs", type=int, default=2, help="pydoc documents for the perplexity rate (0: skip)"
    )
    p.add_argument("--data", default="auto", choices=["auto", "hub", "local"])
    args = p.parse_args(argv)
    torch.manual_seed(0)
    models = []
    for name in filter(None, args.presets.split(",")):
        cfg = HopeConfig.from_name(name)
        models.append((name, cfg, HopeLM(cfg).eval(), ByteTokenizer()))
    for path in args.checkpoint:
        cfg, model, tok = load_model_and_tokenizer(path, args.tokenizer, args.allow_tokenizer_mismatch)
        models.append((path, cfg, model, tok))
    tasks = args.tasks.split(",")
    cols = tasks + (["ppl tokens/s"] if args.ppl_docs else [])
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); --limit {args.limit} items per task"
    )
    print("| model | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, cfg, model, tok in models:
        r = measure(
            model,
            tok,
            tasks,
            args.limit,
            args.ppl_docs,
            default_max_length(cfg),
            cfg.max_seq_len,
            perplexity.default_mode(cfg.mixer),
        )
        print(f"| {name} | " + " | ".join(f"{r[c]:.2f}" for c in cols) + " |", flush=True)
    print("(items/s per task; last column: perplexity tokens/s)")


if __name__ == "__main__":
    main()
