"""Streams from in-memory text (no I/O): class-incremental label prediction and domain-incremental LM.

Class-incremental (the paper's section 9.1 protocol, after InCA): an utterance is the context, its label name
the target text; accuracy is the argmax of the log-likelihood of every label name. Domain-incremental LM:
documents cut into chunks of bytes, scored in held-out bits per byte.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from hope.continual.stream import Example, Experience, Stream

BOS = 256


def encode(text: str) -> tuple[int, ...]:
    return tuple(text.encode("utf-8"))


def label_example(text: str, label: int, label_targets: Sequence[tuple[int, ...]], max_context: int) -> Example:
    ctx = encode(text.strip())[:max_context] + encode(" =>")
    return Example((BOS,) + ctx, label_targets[label], label)


def label_target(name: str) -> tuple[int, ...]:
    return encode(" " + name.replace("_", " ") + "\n")


def class_incremental_stream(name: str, train: Sequence[tuple[str, int]], test: Sequence[tuple[str, int]],
                             label_names: Sequence[str], tasks: Sequence[tuple[str, Sequence[int]]], *,
                             train_per_class: int | None = None, test_per_class: int | None = None,
                             max_context: int = 96, seed: int = 0, general: list[Example] | None = None) -> Stream:
    """``tasks``: (task name, class ids) in stream order; ``*_per_class`` subsample (seeded) each class."""
    seen: set[int] = set()
    for tname, classes in tasks:
        dup = seen.intersection(classes)
        if dup:
            raise ValueError(f"task {tname!r} repeats classes {sorted(dup)[:5]} of an earlier task")
        seen.update(classes)
    targets = [label_target(n) for n in label_names]
    rng = random.Random(seed)

    def by_class(pairs: Sequence[tuple[str, int]], per: int | None) -> dict[int, list[Example]]:
        out: dict[int, list[Example]] = {}
        for text, lab in pairs:
            out.setdefault(lab, []).append(label_example(text, lab, targets, max_context))
        for lab, items in out.items():
            if per is not None and len(items) > per:
                out[lab] = rng.sample(items, per)
        return out

    tr, te = by_class(train, train_per_class), by_class(test, test_per_class)
    exps = []
    for k, (tname, classes) in enumerate(tasks):
        missing = [c for c in classes if c not in tr or c not in te]
        if missing:
            raise ValueError(f"task {tname!r}: classes {missing[:5]} have no train or test examples")
        exps.append(Experience(k, tname, [e for c in classes for e in tr[c]], [e for c in classes for e in te[c]],
                               tuple(classes)))
    return Stream(name, "class", exps, targets, list(label_names), general or [],
                  info={"train_per_class": train_per_class, "test_per_class": test_per_class})


def chunk_documents(docs: Sequence[str], chunk_bytes: int, limit: int | None = None) -> list[Example]:
    """Documents cut into pieces of at most ``chunk_bytes`` bytes, each predicted from ``<bos>``."""
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    out = []
    for d in docs:
        b = encode(d)
        out += [Example((BOS,), b[s : s + chunk_bytes]) for s in range(0, len(b), chunk_bytes)]
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out


def lm_stream(name: str, domains: Sequence[tuple[str, Sequence[str], Sequence[str]]], *, chunk_bytes: int = 128,
              train_chunks: int | None = None, test_chunks: int | None = None,
              general: Sequence[str] = (), general_chunks: int | None = None) -> Stream:
    """``domains``: (name, train documents, test documents) in stream order; ``kind="bpb"``."""
    exps = [Experience(k, n, chunk_documents(tr, chunk_bytes, train_chunks), chunk_documents(te, chunk_bytes,
                                                                                            test_chunks))
            for k, (n, tr, te) in enumerate(domains)]
    return Stream(name, "bpb", exps, general=chunk_documents(general, chunk_bytes, general_chunks),
                  info={"chunk_bytes": chunk_bytes})
