"""The garbage-collection schedule of train.py: off between scheduled collections, on again afterwards."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
from training_helpers import train_args

import train
from hope.training.collector import FULL_EVERY, GarbageCollection
from hope.training.config import TrainConfig


class _Node:
    pass


def _cycle() -> weakref.ref:
    """A weak reference to an object that only a reference cycle keeps alive."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_a_cycle_lives_until_the_scheduled_collection() -> None:
    assert gc.isenabled()
    with GarbageCollection(3) as collector:
        assert not gc.isenabled()
        collector.step(1)
        ref = _cycle()
        for _ in range(2000):  # enough allocations to trigger Python's automatic collection, were it on
            _cycle()
        collector.step(2)
        assert ref() is not None
        collector.step(3)
        assert ref() is None
    assert gc.isenabled()


def test_the_schedule_of_young_and_full_collections(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: calls.append(generation))
    with GarbageCollection(2) as collector:
        for step in range(1, 2 * FULL_EVERY + 2):
            collector.step(step)
    # one full collection at the start, one after the first step, then young ones with every FULL_EVERY-th full
    assert calls == [2, 2] + [1] * (FULL_EVERY - 1) + [2]


def test_zero_leaves_python_s_automatic_collection(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: calls.append(generation))
    with GarbageCollection(0) as collector:
        assert gc.isenabled()
        for step in range(1, 5):
            collector.step(step)
    assert calls == [] and gc.isenabled()


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        with GarbageCollection(5):
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_negative_gc_every_is_rejected() -> None:
    with pytest.raises(ValueError, match="gc_every=-1"):
        TrainConfig(gc_every=-1)
    with pytest.raises(ValueError, match="gc_every=-2"):
        GarbageCollection(-2)


def test_train_restores_automatic_collection(tmp_path: Path, corpus: Path) -> None:
    result = train.main(train_args(corpus, tmp_path / "run", "max_steps=3", "gc_every=2", "sample_tokens=0"))
    assert result["step"] == 3 and gc.isenabled()
