"""One command from checkpoints to the paper's Table 1: JSON plus a markdown table.

Columns: Wiki ppl, LMB ppl, LMB acc, PIQA, Hella (acc_norm), Wino, ARC-e, ARC-c (acc_norm), SIQA, BoolQ, Avg
(mean of the eight accuracies, as ``shared/reference/paper_spec.md`` section 5.2 recomputes it). The paper's
HOPE and Transformer++ rows are printed beside ours and labelled as the paper's numbers. Offline, the Wiki
column is measured on a named substitute corpus and the table says so.

    python -m eval.report --checkpoint runs/tiny/final runs/transformer-tiny/final --limit 200
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from eval import commonsense, perplexity
from eval.data import data_source, load_corpus
from eval.scoring import add_model_args, default_max_length, load_model_and_tokenizer

COLUMNS = [
    "Wiki ppl",
    "LMB ppl",
    "LMB acc",
    "PIQA",
    "Hella",
    "Wino",
    "ARC-e",
    "ARC-c",
    "SIQA",
    "BoolQ",
    "Avg",
]
TASK_COLUMNS = {
    "piqa": "PIQA",
    "hellaswag": "Hella",
    "winogrande": "Wino",
    "arc_easy": "ARC-e",
    "arc_challenge": "ARC-c",
    "social_iqa": "SIQA",
    "boolq": "BoolQ",
}
# NeurIPS Table 1 (shared/reference/paper_spec.md section 5.2; Avg recomputed over the 8 accuracies)
PAPER_ROWS: dict[str, list[float]] = {
    "HOPE 340M/15B (paper)": [26.05, 29.38, 35.40, 64.62, 40.11, 51.19, 56.92, 28.49, 38.33, 60.12, 46.90],
    "Transformer++ 760M/30B (paper)": [
        25.21,
        27.64,
        35.78,
        66.92,
        42.19,
        51.95,
        60.38,
        32.46,
        39.51,
        60.37,
        48.69,
    ],
    "HOPE 760M/30B (paper)": [20.53, 20.47, 39.02, 70.13, 49.21, 52.70, 66.89, 36.05, 40.71, 63.29, 52.25],
    "Transformer++ 1.3B/100B (paper)": [
        18.53,
        18.32,
        42.60,
        70.02,
        50.23,
        53.51,
        68.83,
        35.10,
        40.66,
        57.09,
        52.26,
    ],
    "HOPE 1.3B/100B (paper)": [15.11, 11.63, 50.01, 73.29, 56.84, 60.19, 72.30, 41.24, 42.52, 61.46, 57.23],
}


def table_row(res: dict[str, Any]) -> list[float]:
    """Our results in the Table 1 column order (accuracies in percent)."""
    row = {
        "Wiki ppl": res["wiki"]["word_perplexity"],
        "LMB ppl": res["tasks"]["lambada_openai"]["ppl"],
        "LMB acc": 100 * res["tasks"]["lambada_openai"]["acc"],
    }
    for task, col in TASK_COLUMNS.items():
        row[col] = 100 * res["tasks"][task][commonsense.TABLE_METRIC[task]]
    accs = [row[c] for c in COLUMNS[2:-1]]
    row["Avg"] = sum(accs) / len(accs)
    return [row[c] for c in COLUMNS]


def markdown(rows: dict[str, list[float]], notes: list[str]) -> str:
    def fmt(v: float) -> str:
        return f"{v:.3g}" if v >= 1000 else f"{v:.2f}"

    lines = ["| Model | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(fmt(v) for v in vals) + " |" for name, vals in rows.items()]
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def evaluate_checkpoint(
    path: str, tokenizer: str | None, limit: int | None, ppl_limit: int | None, corpus: str, source: str,
    device: str, allow_mismatch: bool = False,
) -> dict[str, Any]:
    cfg, model, tok = load_model_and_tokenizer(path, tokenizer, allow_mismatch, device)
    t0 = time.perf_counter()
    docs, label = load_corpus(corpus, ppl_limit, source)
    wiki = perplexity.evaluate(
        model, tok, docs, mode=perplexity.default_mode(cfg.mixer), window=cfg.max_seq_len
    )
    wiki.pop("doc_loglikelihoods")
    wiki["corpus"] = label
    tasks = commonsense.run(
        model,
        tok,
        list(commonsense.COMMONSENSE) + ["lambada_openai"],
        limit=limit,
        source=source,
        max_length=default_max_length(cfg),
    )
    return {
        "checkpoint": path,
        "config": cfg.to_dict(),
        "params": sum(p.numel() for p in model.parameters()),
        "wiki": wiki,
        "tasks": tasks,
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description="Evaluate checkpoints and write the paper's Table 1 (JSON + markdown)."
    )
    p.add_argument("--checkpoint", nargs="+", required=True, help="checkpoint directories")
    p.add_argument("--name", nargs="*", default=None, help="row labels (default: config name + folder)")
    add_model_args(p)
    p.add_argument("--limit", type=int, default=None, help="first N items of every task")
    p.add_argument("--ppl-limit", type=int, default=None, help="first N perplexity documents")
    p.add_argument(
        "--corpus", default="wikitext", help="wikitext (offline: pydoc substitute), pydoc, or files"
    )
    p.add_argument("--data", default="auto", choices=["auto", "hub", "local"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="results/report", help="output folder (report.json, report.md)")
    args = p.parse_args(argv)
    results, rows = {}, {}
    for i, path in enumerate(args.checkpoint):
        res = evaluate_checkpoint(
            path, args.tokenizer, args.limit, args.ppl_limit, args.corpus, args.data, args.device,
            args.allow_tokenizer_mismatch,
        )
        name = args.name[i] if args.name else f"{res['config']['name']} ({Path(path).name})"
        results[name] = res
        rows[name] = table_row(res)
    corpora = sorted({r["wiki"]["corpus"] for r in results.values()})
    n_items = {t: r["n"] for r in results.values() for t, r in r["tasks"].items()}
    notes = [
        f"Our rows: {platform.machine()} CPU, torch {torch.__version__}; zero-shot, lm-eval prompts and "
        f"metrics (eval/commonsense.py); items per task: {json.dumps(n_items)}"
        + (f" (--limit {args.limit}: a subset, not the full sets)" if args.limit else "")
        + ".",
        f"Benchmark data: {data_source(args.data)}.",
        f"Wiki ppl column (word perplexity): {'; '.join(corpora)}"
        + (
            ""
            if all(c.startswith("wikitext") for c in corpora)
            else " -- NOT WikiText, so not comparable with the paper's column"
        )
        + ".",
        "Rows marked (paper) are the numbers of the Nested Learning paper's Table 1 (NeurIPS), not ours; "
        "Avg = mean of the 8 accuracies.",
    ]
    nonfinite = {
        n: {t: r["nonfinite"] for t, r in res["tasks"].items() if r.get("nonfinite")}
        for n, res in results.items()
    }
    if any(nonfinite.values()):
        notes.append(f"Non-finite log-likelihoods (diverging state): {json.dumps(nonfinite)}.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(
        json.dumps({"results": results, "paper": PAPER_ROWS, "columns": COLUMNS}, indent=2)
    )
    md = markdown({**rows, **PAPER_ROWS}, notes)
    (out / "report.md").write_text(md)
    print(md)
    print(f"wrote {out / 'report.json'} and {out / 'report.md'}")


if __name__ == "__main__":
    main()
