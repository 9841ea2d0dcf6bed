"""MQAR (Zoology): the generator's invariants, the scorer on models whose answers are known, a positive control."""

from __future__ import annotations

import pytest
import torch

from eval.mqar import evaluate_mqar, make_batch, train_mqar
from hope import HopeConfig, HopeLM


def test_every_query_asks_a_key_of_its_own_sequence():
    x, y = make_batch(6, 70, 5, 256, torch.Generator().manual_seed(3))  # odd length: a spare last token
    assert x.shape == y.shape == (6, 70)
    for b in range(6):
        keys, values = x[b, 0:10:2], x[b, 1:10:2]
        assert len(set(keys.tolist())) == 5 and keys.min() >= 1 and keys.max() <= 127
        assert values.min() >= 128 and values.max() <= 254
        pairs = dict(zip(keys.tolist(), values.tolist()))
        queries = (y[b] != -100).nonzero().flatten().tolist()
        assert len(queries) == 5 and min(queries) >= 10
        assert sorted(x[b, queries].tolist()) == sorted(keys.tolist())  # every key queried once
        for q in queries:
            assert y[b, q] == pairs[int(x[b, q])] == x[b, q + 1]
        filler = [t for t in range(10, 70) if t not in queries and t - 1 not in queries]
        assert (x[b, filler] == 0).all()


def test_batches_are_determined_by_the_generator():
    a = make_batch(3, 64, 4, 256, torch.Generator().manual_seed(1))
    b = make_batch(3, 64, 4, 256, torch.Generator().manual_seed(1))
    c = make_batch(3, 64, 4, 256, torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


def test_impossible_settings_are_refused():
    g = torch.Generator()
    with pytest.raises(ValueError, match="too short for 8 pairs"):
        make_batch(1, 31, 8, 256, g)
    with pytest.raises(ValueError, match="too few keys"):
        make_batch(1, 64, 8, 12, g)
    with pytest.raises(ValueError, match="no valid"):
        train_mqar(torch.nn.Linear(1, 1), 1, 1, [8], [4], 256)


class Oracle(torch.nn.Module):
    """Predicts, at each position, the token that follows it in the input (so every query is answered right),
    or a fixed token when ``fixed`` is set."""

    def __init__(self, fixed: int | None = None):
        super().__init__()
        self.fixed = fixed

    def forward(self, x):
        nxt = torch.roll(x, -1, dims=1) if self.fixed is None else torch.full_like(x, self.fixed)
        return type("Out", (), {"logits": torch.nn.functional.one_hot(nxt, 256).float()})()


def test_accuracy_on_models_with_known_answers():
    assert evaluate_mqar(Oracle(), 64, 4, 20, 256) == 1.0
    # a model that always says value v is right exactly where the queried value is v: count it by hand
    g = torch.Generator().manual_seed(10**6 + 1000 * 64 + 4)
    hits = total = 0
    for s in range(0, 20, 16):
        _, y = make_batch(min(16, 20 - s), 64, 4, 256, g)
        hits, total = hits + int((y == 130).sum()), total + int((y != -100).sum())
    assert evaluate_mqar(Oracle(130), 64, 4, 20, 256) == hits / total


def test_a_small_transformer_learns_recall_above_chance():
    torch.manual_seed(0)
    model = HopeLM(HopeConfig.from_name("transformer-tiny", n_layers=2))
    losses = train_mqar(model, steps=150, batch=16, lengths=[32], pairs=[2], vocab=256, lr=1e-3, seed=0)
    acc = evaluate_mqar(model, 32, 2, 64, 256)
    assert losses[-1] < losses[0] - 1.0
    assert acc > 0.25  # chance: 1 / 127 values; copying a random value of the context: 0.5 at most
