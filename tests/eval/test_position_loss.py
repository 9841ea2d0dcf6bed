"""Loss by position: buckets of the per-token cross-entropy, state carried across windows."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from evalhelpers import tiny_model

from eval.position_loss import held_out_documents, plot_position_loss, position_loss
from hope.training.tokenizer import ByteTokenizer

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. "


def by_hand(model, docs, prefix, seq_len, bucket):
    """Per-token cross-entropy of one full forward per document, averaged over documents, then per bucket."""
    rows = []
    for d in docs:
        x = torch.tensor([[prefix] + d[: seq_len - 1]])
        with torch.no_grad():
            rows.append(F.cross_entropy(model(x).logits[0].float(), torch.tensor(d[:seq_len]), reduction="none"))
    nll = torch.stack(rows).double().mean(0)
    return [float(nll[s : s + bucket].mean()) for s in range(0, seq_len, bucket)]


@pytest.mark.parametrize("mixer", ["smt", "attention"])
def test_buckets_match_a_full_forward(mixer):
    model, tok = tiny_model(mixer), ByteTokenizer()
    docs = [tok.encode(TEXT * 2), tok.encode(TEXT[::-1] * 3)]
    ref = by_hand(model, docs, tok.eos_id, seq_len=150, bucket=40)  # a partial last bucket (30 tokens)
    for window in (150, 37):  # one call, and windows that split chunks off their boundaries
        got = position_loss(model, docs, tok.eos_id, seq_len=150, bucket=40, window=window)
        assert [r["start"] for r in got] == [0, 40, 80, 120] and got[-1]["end"] == 150
        assert [r["loss"] for r in got] == pytest.approx(ref, rel=1e-4, abs=1e-4)
        assert got[0]["bpb"] == pytest.approx(got[0]["loss"] / math.log(2))


class Uniform(torch.nn.Module):
    """Logits all zero: every token costs log(vocab) nats."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.w = vocab, torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, state=None):
        return type("Out", (), {"logits": torch.zeros(*x.shape, self.vocab), "state": None})()


def test_uniform_model_costs_log_vocab_everywhere():
    got = position_loss(Uniform(300), [[1] * 20, [2] * 25], prefix=0, seq_len=20, bucket=8, window=6)
    assert [r["loss"] for r in got] == pytest.approx([math.log(300)] * 3)
    assert [r["end"] for r in got] == [8, 16, 20]


def test_short_documents_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="1 of 2 documents are shorter than seq_len=10"):
        position_loss(Uniform(10), [[1] * 10, [1] * 9], prefix=0, seq_len=10, bucket=5)
    with pytest.raises(ValueError, match="must be positive"):
        position_loss(Uniform(10), [[1] * 10], prefix=0, seq_len=10, bucket=0)
    with pytest.raises(ValueError, match="no documents"):
        position_loss(Uniform(10), [], prefix=0, seq_len=10, bucket=5)


def test_held_out_documents_are_long_and_held_out(tmp_path):
    tok = ByteTokenizer()
    docs = held_out_documents(tok, seq_len=2048, limit=3)
    assert len(docs) == 3 and all(len(d) == 2048 for d in docs)
    with pytest.raises(ValueError, match="no held-out document"):
        held_out_documents(tok, seq_len=10**8, limit=1)
    plot_position_loss({"a": position_loss(Uniform(10), [[1] * 8], 0, 8, 4)}, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
