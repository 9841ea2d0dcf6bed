"""Rolling perplexity: state carried across windows equals one pass; disjoint windows equal lm-eval's."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from evalhelpers import have, tiny_model

from eval.perplexity import carry_loglikelihoods, disjoint_loglikelihoods, evaluate, rolling_windows
from hope.training.tokenizer import ByteTokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 4,
    "Short doc.",
    "Another document, of middling size. " * 3,
]


def single_pass(model, tokens: list[int], prefix: int) -> float:
    x = torch.tensor([[prefix] + tokens[:-1]])
    with torch.no_grad():
        logits = model(x).logits[0].float()
    return -F.cross_entropy(logits, torch.tensor(tokens), reduction="sum").item()


@pytest.mark.parametrize("mixer", ["smt", "attention"])
def test_carry_equals_single_pass(mixer):
    model, tok = tiny_model(mixer), ByteTokenizer()
    docs = [tok.encode(t) for t in TEXTS]
    ref = [single_pass(model, d, tok.eos_id) for d in docs]
    whole = carry_loglikelihoods(model, docs, tok.eos_id, window=4096)  # window covers every document
    assert whole == pytest.approx(ref, abs=1e-3)
    for window in (7, 16, 61):  # windows that split chunks (8, 16) at and off their boundaries
        got = carry_loglikelihoods(model, docs, tok.eos_id, window=window, batch_size=2)
        assert got == pytest.approx(ref, rel=1e-4, abs=1e-3)


def test_disjoint_windows_match_lm_eval():
    tokens = list(range(1, 24))
    for max_len in (1, 5, 8, 23, 40):
        ours = rolling_windows(tokens, 0, max_len)
        assert [t for _, p in ours for t in p] == tokens  # every token predicted exactly once
        if have("lm_eval"):
            from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

            ref = [make_disjoint_window(w) for w in get_rolling_token_windows(tokens, 0, max_len, 1)]
            assert ours == [tuple(w) for w in ref]


def test_disjoint_with_long_window_equals_single_pass_and_bounds_context():
    model, tok = tiny_model("attention"), ByteTokenizer()
    docs = [tok.encode(t) for t in TEXTS]
    ref = [single_pass(model, d, tok.eos_id) for d in docs]
    assert disjoint_loglikelihoods(model, docs, tok.eos_id, max_len=1000) == pytest.approx(
        ref, abs=1e-3
    )
    short = disjoint_loglikelihoods(model, docs, tok.eos_id, max_len=16)
    assert short[1] == pytest.approx(ref[1], abs=1e-3)  # "Short doc." fits in one window
    assert short[0] != pytest.approx(ref[0], abs=1e-3)  # fresh state per window: less context


def test_metrics_and_state_reset_between_documents():
    model, tok = tiny_model(), ByteTokenizer()
    docs = [{"page": t, "text": t} for t in TEXTS]
    res = evaluate(model, tok, docs, window=32)
    alone = [evaluate(model, tok, [d], window=32)["doc_loglikelihoods"][0] for d in docs]
    assert res["doc_loglikelihoods"] == pytest.approx(alone, abs=1e-3)  # no state leaks between documents
    ll, n_bytes = sum(alone), sum(len(t.encode()) for t in TEXTS)
    assert res["bits_per_byte"] == pytest.approx(-ll / n_bytes / math.log(2), rel=1e-5)
    assert res["token_perplexity"] == pytest.approx(res["byte_perplexity"], rel=1e-6)  # bytes are tokens
    assert res["word_perplexity"] == pytest.approx(
        math.exp(-ll / sum(len(t.split(" ")) for t in TEXTS)), rel=1e-5
    )
