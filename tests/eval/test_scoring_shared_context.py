"""Scoring a shared context once and continuing its state equals scoring every request whole."""

from __future__ import annotations

import random

import pytest
import torch

from hope import HopeConfig, HopeLM
from hope.scoring import score_requests

MODELS = {
    "attention": dict(mixer="attention", cms_chunk_sizes=(None,)),
    "smt": dict(mixer="smt", cms_chunk_sizes=(4, 8, None), chunk_memory=4, chunk_other=8),
    "titans": dict(mixer="titans", cms_chunk_sizes=(5, None), chunk_memory=3),
}


def requests(seed: int) -> list[tuple[list[int], list[int]]]:
    """Contexts of several lengths, each with several continuations (some of one token), plus singletons."""
    rng = random.Random(seed)
    out = []
    for _ in range(7):
        ctx = [rng.randrange(64) for _ in range(rng.choice([3, 5, 9, 9, 13]))]
        for _ in range(rng.randrange(2, 6)):
            out.append((ctx, [rng.randrange(64) for _ in range(rng.choice([1, 2, 6, 11]))]))
    out += [([rng.randrange(64) for _ in range(6)], [rng.randrange(64) for _ in range(4)]) for _ in range(3)]
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("mixer", list(MODELS))
def test_shared_context_scores_equal_whole_request_scores(mixer):
    torch.manual_seed(0)
    model = HopeLM(HopeConfig(vocab_size=64, dim=32, n_layers=2, n_heads=2, cms_hidden=48, backend="chunk",
                              **MODELS[mixer])).eval()
    for p in model.parameters():  # larger weights than the init, so the scores differ across continuations
        p.data.mul_(4)
    reqs = requests(1)
    shared = score_requests(model, reqs, max_length=64, batch_tokens=96, max_batch=3)
    whole = score_requests(model, reqs, max_length=64, share_context=False)
    assert len({round(ll, 3) for ll, _ in whole}) > len(reqs) // 2  # the scores are not all alike
    for (a, ga), (b, gb) in zip(shared, whole):
        assert a == pytest.approx(b, abs=1e-4, rel=1e-5)
        assert ga == gb


def test_truncated_requests_are_scored_whole():
    """A request longer than ``max_length`` is truncated from the left, so it cannot share its context."""
    torch.manual_seed(0)
    model = HopeLM(HopeConfig(vocab_size=64, dim=32, n_layers=1, n_heads=2, cms_hidden=48, backend="chunk",
                              **MODELS["smt"])).eval()
    ctx = list(range(1, 12))
    reqs = [(ctx, [5, 6, 7]), (ctx, [8]), (ctx, [9, 10])]
    shared = score_requests(model, reqs, max_length=10)
    whole = score_requests(model, reqs, max_length=10, share_context=False)
    for (a, _), (b, _) in zip(shared, whole):
        assert a == pytest.approx(b, abs=1e-5)
