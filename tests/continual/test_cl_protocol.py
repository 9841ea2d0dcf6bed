"""The protocol: it refuses peeking learners, leaves learners bit-identical after evaluation, and its stream
can detect forgetting (positive control) and its absence (negative controls)."""

import random

import pytest
import torch
from clhelpers import tiny_lm

from hope.continual import METHODS, EvaluationChangedState, Learner, Protocol, ProtocolViolation, cipher_stream
from hope.continual.metrics import backward_transfer
from hope.continual.state import digest
from hope.continual.stream import ExperienceView


class PeeksAtTest(Learner):
    def begin_task(self, view):
        super().begin_task(view)
        view.test  # noqa: B018


class PeeksAtFuture(Learner):
    def begin_task(self, view):
        super().begin_task(view)
        view.data_of(view.task_id + 1)


class MutatesWhileScoring(Learner):
    def score(self, requests, task_id=None):
        with torch.no_grad():
            next(self.model.parameters()).add_(1.0)
        return super().score(requests, task_id)


def small_stream(**kw):
    return cipher_stream(2, 4, 0.0, 2, 1, **kw)


def test_refuses_test_data_and_future_tasks():
    stream = small_stream()
    with pytest.raises(ProtocolViolation, match="test data"):
        Protocol(stream).run(PeeksAtTest(tiny_lm(), max_len=16))
    with pytest.raises(ProtocolViolation, match="future task 1"):
        Protocol(stream).run(PeeksAtFuture(tiny_lm(), max_len=16))


@pytest.mark.parametrize("method,mixer,opts", [
    ("naive", "smt", {"persist_cms": True, "multi_frequency": True}),
    ("replay", "attention", {}),
    ("ewc", "attention", {}),
    ("lwf", "smt", {"eval_mode": "frozen"}),
    ("agem", "attention", {}),
])
def test_evaluation_leaves_learner_bit_identical(method, mixer, opts):
    stream = small_stream()
    learner = METHODS[method](tiny_lm(mixer), max_len=16, **opts)
    proto = Protocol(stream, batch_size=4)
    for exp_ in stream.experiences:  # train (so optimizer and method state are non-empty), then evaluate
        view = ExperienceView(exp_, len(stream))
        learner.begin_task(view)
        for b in proto.batches(exp_.train, random.Random(0)):
            learner.observe(b)
        learner.end_task(view)
    assert len(learner.optimizer.state) > 0, "optimizer state should be non-empty"
    before = digest(learner.snapshot())
    scores, changed = proto.evaluate_all(learner, seen_tasks=2)
    assert digest(learner.snapshot()) == before
    assert not changed
    assert set(scores) == {"acc"} and len(scores["acc"]) == 2


def test_a_state_change_during_evaluation_is_detected_and_undone():
    learner = MutatesWhileScoring(tiny_lm(), max_len=16)
    before = digest(learner.snapshot())
    proto = Protocol(small_stream())
    _, changed = proto.evaluate_all(learner, seen_tasks=1)
    assert changed
    assert digest(learner.snapshot()) == before

    class BrokenRestore(MutatesWhileScoring):
        def restore(self, snap):  # pretends to restore
            pass

    broken = BrokenRestore(tiny_lm(), max_len=16)
    with pytest.raises(EvaluationChangedState):
        proto.evaluate_all(broken, seen_tasks=1)


def run(method, seed=0, **kw):
    stream = cipher_stream(2, 16, 0.0, 8, 2, seed=seed)
    learner = METHODS[method](tiny_lm(seed=seed), lr=3e-3, max_len=16, seed=seed, **kw)
    return Protocol(stream, epochs=6, batch_size=16, seed=seed).run(learner)


@pytest.mark.slow
def test_positive_and_negative_controls():
    """Two conflicting ciphers: naive forgets (BWT clearly negative), joint does not, replay forgets less."""
    naive, joint, replay = run("naive"), run("joint"), run("replay", buffer_size=64)
    for r in (naive, joint, replay):
        assert r.acc_matrix[0][0] >= 0.9, r.acc_matrix  # every learner learned task 0
        assert r.eval_changed_state == 0
    assert backward_transfer(naive.acc_matrix) <= -0.5, naive.acc_matrix
    assert backward_transfer(joint.acc_matrix) >= -0.1, joint.acc_matrix
    assert backward_transfer(replay.acc_matrix) > backward_transfer(naive.acc_matrix) + 0.3, replay.acc_matrix
    assert naive.initial["acc"] == pytest.approx([1 / 16, 1 / 16], abs=0.2)  # random init: near chance


def test_restore_keeps_optimized_modules_in_place():
    """Adapters' parameters live in the method state; a restore must not orphan the optimizer's references."""
    stream = small_stream()
    learner = METHODS["adapters"](tiny_lm(), max_len=16)
    proto = Protocol(stream, batch_size=4)
    for exp_ in stream.experiences:
        view = ExperienceView(exp_, len(stream))
        learner.begin_task(view)
        learner.observe(exp_.train[:4])
        proto.evaluate_all(learner, seen_tasks=exp_.task_id + 1)
    opt_params = {id(p) for g in learner.optimizer.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in learner.adapters[0].parameters()}
    with pytest.raises(ValueError, match="task id"):
        learner.score([([256, 97], [98])])
