"""Benchmark -> stream of experiences, and the read-only views a learner is handed.

An :class:`Example` is token ids: a ``context`` and a ``target`` (the tokens that are trained on and scored).
A :class:`Stream` holds every experience's train **and** test data; only the protocol touches it. A learner
sees one :class:`ExperienceView` at a time, which exposes the current task's training data and nothing else:
asking it for test data or for another task's data raises :class:`ProtocolViolation`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

KINDS = ("class", "exact", "bpb")


class ProtocolViolation(RuntimeError):
    """A learner asked for data the protocol does not give it (test data, a future or past task)."""


@dataclasses.dataclass(frozen=True)
class Example:
    """``context`` tokens (given) and ``target`` tokens (predicted); ``label`` is the class id, or -1."""

    context: tuple[int, ...]
    target: tuple[int, ...]
    label: int = -1

    def __post_init__(self) -> None:
        if not self.target:
            raise ValueError("an Example needs at least one target token")


@dataclasses.dataclass
class Experience:
    """One task of a stream: its name, train and test examples and (class-incremental) its class ids."""

    task_id: int
    name: str
    train: list[Example]
    test: list[Example]
    classes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.train:
            raise ValueError(f"experience {self.task_id} ({self.name}) has no training data")
        if not self.test:
            raise ValueError(f"experience {self.task_id} ({self.name}) has no test data")


@dataclasses.dataclass
class Stream:
    """A benchmark's experiences in order, how each is scored, and an optional general corpus.

    ``kind``: ``"class"`` (label prediction among ``label_targets`` by log-likelihood), ``"exact"`` (the target
    is the greedy continuation) or ``"bpb"`` (held-out bits per byte of the target; lower is better).
    ``general``: held-out text (as Examples) whose bits per byte before and after the stream measure retention.
    """

    name: str
    kind: str
    experiences: list[Experience]
    label_targets: Sequence[tuple[int, ...]] = ()
    label_names: Sequence[str] = ()
    general: list[Example] = dataclasses.field(default_factory=list)
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"stream kind must be one of {KINDS}, got {self.kind!r}")
        if not self.experiences:
            raise ValueError(f"stream {self.name!r} has no experiences")
        if self.kind == "class":
            n = len(self.label_targets)
            if n == 0:
                raise ValueError("a class-incremental stream needs label_targets")
            for exp in self.experiences:
                for ex in exp.train + exp.test:
                    if not 0 <= ex.label < n:
                        raise ValueError(f"task {exp.task_id}: label {ex.label} outside the {n} label targets")

    def __len__(self) -> int:
        return len(self.experiences)


class ExperienceView:
    """What a learner may see of the current experience: its id, name, classes and training data."""

    def __init__(self, exp: Experience, n_tasks: int, train: list[Example] | None = None) -> None:
        self._exp = exp
        self.task_id, self.name, self.classes, self.n_tasks = exp.task_id, exp.name, exp.classes, n_tasks
        self.train: list[Example] = list(exp.train if train is None else train)

    @property
    def test(self) -> list[Example]:
        raise ProtocolViolation(f"a learner asked for the test data of task {self.task_id} ({self.name}); "
                                "only the protocol evaluates")

    def data_of(self, task_id: int) -> list[Example]:
        """Training data of ``task_id``: only the current task's is given."""
        if task_id > self.task_id:
            raise ProtocolViolation(f"a learner asked for the data of future task {task_id} while on task "
                                    f"{self.task_id}")
        if task_id < self.task_id:
            raise ProtocolViolation(f"a learner asked for the data of past task {task_id}; keep what you need "
                                    "(a replay buffer) while the task is current")
        return self.train
