"""Zero-shot commonsense suite of the paper's Table 1 with lm-eval's exact prompts, scoring and metrics.

Tasks: PIQA, HellaSwag, WinoGrande, ARC-Easy, ARC-Challenge, Social IQa, BoolQ (multiple choice: one
log-likelihood request per choice, ``acc`` = argmax of the summed log-likelihoods, ``acc_norm`` = argmax after
dividing by each choice's length in characters; WinoGrande is lm-eval's *partial* scoring, where the choices
fill the blank in the context and the shared rest of the sentence is scored) and LAMBADA-OpenAI (perplexity of
the last word and last-word accuracy = greedy match). The prompt functions mirror lm-eval's task YAMLs
(``lm_eval/tasks/{piqa,hellaswag,winogrande,arc,siqa,super_glue/boolq,lambada}``); ``eval/tasks`` registers
the same functions with lm-eval, and ``tests/eval`` checks them against the upstream Jinja templates.

    python -m eval.commonsense --checkpoint runs/tiny/final --tasks piqa,arc_easy --limit 100
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from eval.data import data_source, load_docs
from eval.scoring import (
    Tokenizer,
    add_model_args,
    default_max_length,
    encode_pair,
    load_model_and_tokenizer,
    score_requests,
)


# ---- prompts (lm-eval's, written as Python) ----------------------------------------------------------------
def _hellaswag_preprocess(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _hellaswag_query(doc: dict) -> str:
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return _hellaswag_preprocess(doc["activity_label"] + ": " + ctx)


def _wino_blank(doc: dict) -> int:
    return doc["sentence"].index("_")


@dataclasses.dataclass(frozen=True)
class MCTask:
    """A multiple-choice task: ``text(doc)`` the context (for ``multiple_input`` tasks the gold index),
    ``choices(doc)`` the options, ``target(doc)`` the gold index (for ``multiple_input`` the shared
    continuation)."""

    name: str
    text: Callable[[dict], Any]
    choices: Callable[[dict], list[str]]
    target: Callable[[dict], Any]
    metrics: tuple[str, ...] = ("acc", "acc_norm")
    multiple_input: bool = False
    delimiter: str = " "

    def gold(self, doc: dict) -> int:
        return int(self.text(doc) if self.multiple_input else self.target(doc))

    def requests(self, doc: dict) -> list[tuple[str, str]]:
        """The (context, continuation) strings lm-eval's ``construct_requests`` builds (zero-shot)."""
        if self.multiple_input:
            return [(ctx, self.delimiter + self.target(doc)) for ctx in self.choices(doc)]
        return [(self.text(doc), self.delimiter + c) for c in self.choices(doc)]


TASKS: dict[str, MCTask] = {
    "piqa": MCTask(
        "piqa",
        lambda d: f"Question: {d['goal']}\nAnswer:",
        lambda d: [d["sol1"], d["sol2"]],
        lambda d: int(d["label"]),
    ),
    "hellaswag": MCTask(
        "hellaswag",
        _hellaswag_query,
        lambda d: [_hellaswag_preprocess(e) for e in d["endings"]],
        lambda d: int(d["label"]),
    ),
    "winogrande": MCTask(
        "winogrande",
        lambda d: {"1": 0, "2": 1}[d["answer"]],
        lambda d: [d["sentence"][: _wino_blank(d)] + o for o in (d["option1"], d["option2"])],
        lambda d: d["sentence"][_wino_blank(d) + 1 :].strip(),
        metrics=("acc",),
        multiple_input=True,
    ),
    "arc_easy": MCTask(
        "arc_easy",
        lambda d: f"Question: {d['question']}\nAnswer:",
        lambda d: list(d["choices"]["text"]),
        lambda d: list(d["choices"]["label"]).index(d["answerKey"]),
    ),
    "arc_challenge": MCTask(
        "arc_challenge",
        lambda d: f"Question: {d['question']}\nAnswer:",
        lambda d: list(d["choices"]["text"]),
        lambda d: list(d["choices"]["label"]).index(d["answerKey"]),
    ),
    "social_iqa": MCTask(
        "social_iqa",
        lambda d: f"Q: {d['context']} {d['question']}\nA:",
        lambda d: [d["answerA"], d["answerB"], d["answerC"]],
        lambda d: int(d["label"]) - 1,
        metrics=("acc",),
    ),
    "boolq": MCTask(
        "boolq",
        lambda d: f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:",
        lambda d: ["no", "yes"],
        lambda d: int(d["label"]),
        metrics=("acc",),
    ),
}
COMMONSENSE = tuple(TASKS)
# the metric the paper's Table 1 reports for each task (acc_norm for HellaSwag and ARC-c, as fla/GLA)
TABLE_METRIC = {
    "piqa": "acc",
    "hellaswag": "acc_norm",
    "winogrande": "acc",
    "arc_easy": "acc",
    "arc_challenge": "acc_norm",
    "social_iqa": "acc",
    "boolq": "acc",
}


def lambada_request(doc: dict) -> tuple[str, str]:
    """lm-eval ``lambada_openai``: context = all but the last space-separated word, target = ``" " +
    last``."""
    words = doc["text"].split(" ")
    return " ".join(words[:-1]), " " + words[-1]


# ---- metrics -----------------------------------------------------------------------------------------------
def mc_metrics(task: MCTask, doc: dict, lls: list[float]) -> dict[str, float]:
    """lm-eval's multiple-choice ``process_results``: acc, acc_norm (by choice length in characters)."""
    lls_arr = np.array(lls)
    gold = task.gold(doc)
    out = {"acc": float(np.argmax(lls_arr) == gold)}
    if "acc_norm" in task.metrics:
        lens = np.array([float(len(c)) for c in task.choices(doc)])
        out["acc_norm"] = float(np.argmax(lls_arr / lens) == gold)
    return out


def evaluate_task(
    model: nn.Module,
    tok: Tokenizer,
    name: str,
    docs: list[dict],
    *,
    max_length: int | None = None,
    batch_tokens: int = 16384,
) -> dict[str, Any]:
    """Score one task's documents; returns the metrics, the item count and every item's log-likelihoods."""
    if name == "lambada_openai":
        reqs = [encode_pair(tok, *lambada_request(d)) for d in docs]
        res = score_requests(model, reqs, max_length=max_length, batch_tokens=batch_tokens)
        lls = [r[0] for r in res]
        return {
            "ppl": math.exp(-float(np.mean(lls))),
            "acc": float(np.mean([r[1] for r in res])),
            "n": len(docs),
            "nonfinite": int(np.sum(~np.isfinite(lls))),
            "lls": lls,
        }
    task = TASKS[name]
    per_doc = [task.requests(d) for d in docs]
    flat = [encode_pair(tok, c, x) for reqs in per_doc for c, x in reqs]
    res = score_requests(model, flat, max_length=max_length, batch_tokens=batch_tokens)
    out: dict[str, Any] = {"n": len(docs), "lls": []}
    scores: dict[str, list[float]] = {m: [] for m in task.metrics}
    i = 0
    for d, reqs in zip(docs, per_doc):
        lls = [r[0] for r in res[i : i + len(reqs)]]
        i += len(reqs)
        out["lls"].append(lls)
        for m, v in mc_metrics(task, d, lls).items():
            scores[m].append(v)
    for m, v in scores.items():
        out[m] = float(np.mean(v)) if v else float("nan")
    out["nonfinite"] = int(sum(not math.isfinite(r[0]) for r in res))  # a diverging model state shows up here
    return out


def run(
    model: nn.Module,
    tok: Tokenizer,
    tasks: list[str],
    *,
    limit: int | None = None,
    source: str = "auto",
    max_length: int | None = None,
    batch_tokens: int = 16384,
    keep_lls: bool = False,
) -> dict[str, Any]:
    """Evaluate ``tasks`` (names of :data:`TASKS` or ``lambada_openai``); adds ``seconds`` and
    ``items_per_s``."""
    results = {}
    for name in tasks:
        docs = load_docs(name, source, limit)
        t0 = time.perf_counter()
        r = evaluate_task(model, tok, name, docs, max_length=max_length, batch_tokens=batch_tokens)
        r["seconds"] = time.perf_counter() - t0
        r["items_per_s"] = r["n"] / max(r["seconds"], 1e-9)
        if not keep_lls:
            r.pop("lls")
        results[name] = r
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Zero-shot commonsense suite (lm-eval prompts and metrics).")
    p.add_argument(
        "--checkpoint", required=True, help="checkpoint directory (model.safetensors + config.json)"
    )
    add_model_args(p)
    p.add_argument("--tasks", default=",".join(COMMONSENSE + ("lambada_openai",)))
    p.add_argument("--limit", type=int, default=None, help="first N documents of each task")
    p.add_argument("--data", default="auto", choices=["auto", "hub", "local"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-tokens", type=int, default=16384)
    p.add_argument("--output", default=None, help="write the results JSON here")
    p.add_argument("--keep-lls", action="store_true", help="include every item's log-likelihoods")
    args = p.parse_args(argv)
    cfg, model, tok = load_model_and_tokenizer(args.checkpoint, args.tokenizer, args.allow_tokenizer_mismatch,
                                               args.device)
    res = run(
        model,
        tok,
        args.tasks.split(","),
        limit=args.limit,
        source=args.data,
        max_length=default_max_length(cfg),
        batch_tokens=args.batch_tokens,
        keep_lls=args.keep_lls,
    )
    res["_data"] = data_source(args.data)
    text = json.dumps(res, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
