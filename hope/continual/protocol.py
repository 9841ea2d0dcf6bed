"""The protocol owns the loop and all test data: ``result = Protocol(stream, ...).run(learner)``.

For each experience i: ``begin_task(view)``, ``epochs`` passes of shuffled minibatches through
``observe(batch)``, ``end_task(view)``, then the learner is evaluated on **every** task's test set, giving row
i of the score matrix (row -1, before any training, is the random-init baseline). Every evaluation runs
between a snapshot and a restore of all learner state, and the restored state is checked bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable

from hope.continual.learner import Learner
from hope.continual.state import digest
from hope.continual.stream import Example, ExperienceView, Stream


class EvaluationChangedState(RuntimeError):
    """Restoring the snapshot taken before an evaluation did not give back bit-identical state."""


@dataclasses.dataclass
class RunResult:
    """Score matrices (``[i][j]``: task j after training through task i) and their baselines."""

    stream: str
    kind: str
    matrices: dict[str, list[list[float]]]
    initial: dict[str, list[float]]
    general_bpb: tuple[float, float] | None
    flags: dict
    steps: int
    seconds: float
    eval_changed_state: int = 0
    curves: list[dict] = dataclasses.field(default_factory=list)

    @property
    def acc_matrix(self) -> list[list[float]]:
        key = {"class": "acc_seen", "exact": "acc", "bpb": "neg_bpb"}[self.kind]
        return self.matrices[key]


def bits_per_byte(lls: list[float], examples: list[Example], bytes_of: Callable[[Example], int]) -> float:
    n = sum(bytes_of(ex) for ex in examples)
    if n == 0:
        raise ValueError("bits per byte over zero bytes")
    return -sum(lls) / math.log(2) / n


def _default_bytes(ex: Example) -> int:
    return sum(1 for t in ex.target if t < 256)


class Protocol:
    """Train ``learner`` on ``stream`` task by task; ``epochs`` passes of ``batch_size`` examples per task."""

    def __init__(self, stream: Stream, *, epochs: int = 1, batch_size: int = 16, seed: int = 0,
                 check_restore: bool = True, bytes_of: Callable[[Example], int] = _default_bytes,
                 log: Callable[[str], None] | None = None) -> None:
        if epochs < 1 or batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
        self.stream, self.epochs, self.batch_size, self.seed = stream, epochs, batch_size, seed
        self.check_restore, self.bytes_of, self.log = check_restore, bytes_of, log or (lambda s: None)

    # ---- evaluation ----------------------------------------------------------------------------------------
    def evaluate_task(self, learner: Learner, j: int, seen_tasks: int) -> dict[str, float]:
        """Scores of task j's test set; ``seen_tasks`` = how many tasks the label space 'seen' covers."""
        s, exp = self.stream, self.stream.experiences[j]
        tid = j if learner.uses_task_id else None
        if s.kind == "class":
            n_lab = len(s.label_targets)
            seen = sorted({c for e in s.experiences[: max(seen_tasks, j + 1)] for c in e.classes})
            reqs = [(list(ex.context), list(s.label_targets[c])) for ex in exp.test for c in range(n_lab)]
            lls = [ll for ll, _ in learner.score(reqs, task_id=tid)]
            right_all = right_seen = 0
            for i, ex in enumerate(exp.test):
                row = lls[i * n_lab : (i + 1) * n_lab]
                right_all += max(range(n_lab), key=row.__getitem__) == ex.label
                right_seen += max(seen, key=row.__getitem__) == ex.label
            return {"acc_all": right_all / len(exp.test), "acc_seen": right_seen / len(exp.test)}
        out = learner.score([(list(ex.context), list(ex.target)) for ex in exp.test], task_id=tid)
        if s.kind == "exact":
            return {"acc": sum(g for _, g in out) / len(out)}
        bpb = bits_per_byte([ll for ll, _ in out], exp.test, self.bytes_of)
        return {"bpb": bpb, "neg_bpb": -bpb}

    def general_bpb(self, learner: Learner) -> float:
        g = self.stream.general
        out = learner.score([(list(ex.context), list(ex.target)) for ex in g])
        return bits_per_byte([ll for ll, _ in out], g, self.bytes_of)

    def guarded(self, learner: Learner, fn: Callable[[], object]) -> tuple[object, bool]:
        """Run ``fn`` between a snapshot and a restore of the learner; returns (result, whether fn had
        changed the learner's state). Raises if the restored state is not bit-identical."""
        snap = learner.snapshot()
        before = digest(snap)
        result = fn()
        changed = digest(learner.snapshot()) != before
        learner.restore(snap)
        if self.check_restore and digest(learner.snapshot()) != before:
            raise EvaluationChangedState("learner state after evaluation differs from its snapshot")
        return result, changed

    def evaluate_all(self, learner: Learner, seen_tasks: int) -> tuple[dict[str, list[float]], bool]:
        def run() -> dict[str, list[float]]:
            rows: dict[str, list[float]] = {}
            for j in range(len(self.stream)):
                for k, v in self.evaluate_task(learner, j, seen_tasks).items():
                    rows.setdefault(k, []).append(v)
            return rows

        return self.guarded(learner, run)

    # ---- the loop ------------------------------------------------------------------------------------------
    def batches(self, data: list[Example], rng: random.Random) -> list[list[Example]]:
        out = []
        for _ in range(self.epochs):
            order = list(range(len(data)))
            rng.shuffle(order)
            out += [[data[i] for i in order[b : b + self.batch_size]] for b in range(0, len(order), self.batch_size)]
        return out

    def run(self, learner: Learner) -> RunResult:
        t0, rng, T = time.time(), random.Random(self.seed), len(self.stream)
        changed = 0
        initial, ch = self.evaluate_all(learner, seen_tasks=1)
        changed += ch
        general = [self.guarded(learner, lambda: self.general_bpb(learner))[0]] if self.stream.general else None
        rows: dict[str, list[list[float]]] = {k: [] for k in initial}
        curves = []
        for i, exp in enumerate(self.stream.experiences):
            train = exp.train
            if learner.sees_past_data:
                train = [ex for e in self.stream.experiences[: i + 1] for ex in e.train]
            view = ExperienceView(exp, T, train)
            learner.begin_task(view)
            losses = [learner.observe(b) for b in self.batches(train, rng)]
            learner.end_task(view)
            scores, ch = self.evaluate_all(learner, seen_tasks=i + 1)
            changed += ch
            for k, v in scores.items():
                rows[k].append(v)
            curves.append({"task": i, "name": exp.name, "loss_first": losses[0], "loss_last": losses[-1],
                           "steps": len(losses)})
            self.log(f"task {i} ({exp.name}): {len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
                     + ", ".join(f"{k} {v[i]:.3f} (tasks <= {i}: {sum(v[: i + 1]) / (i + 1):.3f})"
                                 for k, v in scores.items() if not k.startswith("neg")))
        if general is not None:
            general.append(self.guarded(learner, lambda: self.general_bpb(learner))[0])
        return RunResult(self.stream.name, self.stream.kind, rows, initial,
                         tuple(general) if general else None, learner.flags(), learner.steps,
                         time.time() - t0, changed, curves)
