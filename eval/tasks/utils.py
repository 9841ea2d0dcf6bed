"""Functions behind the offline task YAMLs: datasets from ``eval.data`` and the prompts of
``eval.commonsense`` (the same code, so lm-eval and ``eval.commonsense`` build identical requests)."""

from __future__ import annotations

from typing import Any

import datasets

from eval.commonsense import TASKS, lambada_request
from eval.data import load_docs, load_pydoc_corpus


def _dataset(task: str, split: str, **kwargs: Any) -> dict[str, datasets.Dataset]:
    return {split: datasets.Dataset.from_list(load_docs(task, kwargs.get("source", "auto")))}


def piqa_dataset(**kw: Any) -> dict[str, datasets.Dataset]:
    return _dataset("piqa", "validation", **kw)


def hellaswag_dataset(**kw: Any) -> dict[str, datasets.Dataset]:
    return _dataset("hellaswag", "validation", **kw)


def winogrande_dataset(**kw: Any) -> dict[str, datasets.Dataset]:
    return _dataset("winogrande", "validation", **kw)


def arc_easy_dataset(**kw: Any) -> dict[str, datasets.Dataset]:
    return _dataset("arc_easy", "validation", **kw)


def arc_challenge_dataset(**kw: Any) -> dict[str, datasets.Dataset]:
    return _dataset("arc_challenge", "validation", **kw)


def social_iqa_dataset(**kw: Any) -> dict[str, datasets.Dataset]:
    return _dataset("social_iqa", "validation", **kw)


def boolq_dataset(**kw: Any) -> dict[str, datasets.Dataset]:
    return _dataset("boolq", "validation", **kw)


def lambada_dataset(**kw: Any) -> dict[str, datasets.Dataset]:
    return _dataset("lambada_openai", "test", **kw)


def pydoc_dataset(**kw: Any) -> dict[str, datasets.Dataset]:
    return {"test": datasets.Dataset.from_list(load_pydoc_corpus())}


def lambada_text(doc: dict) -> str:
    return lambada_request(doc)[0]


def lambada_target(doc: dict) -> str:
    return lambada_request(doc)[1]


def pydoc_target(doc: dict) -> str:
    return doc["text"]


# <task>_text, <task>_choices, <task>_target for every multiple-choice task
for _name, _task in TASKS.items():
    globals()[f"{_name}_text"] = _task.text
    globals()[f"{_name}_choices"] = _task.choices
    globals()[f"{_name}_target"] = _task.target
