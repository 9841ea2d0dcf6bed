"""The shared scorer: exact lm-eval metrics on a scripted model, encoding, state reset and order
invariance."""

from __future__ import annotations

import math

import pytest
import torch
from evalhelpers import LOG_VOCAB, tiny_model

from eval.commonsense import TASKS, MCTask, evaluate_task, mc_metrics
from eval.scoring import encode_pair, score_requests
from hope.training.tokenizer import ByteTokenizer


def test_encode_pair_matches_lm_eval_rules():
    tok = ByteTokenizer()
    assert encode_pair(tok, "Answer: ", "yes") == (list(b"Answer:"), list(b" yes"))
    assert encode_pair(tok, "", "hi") == ([tok.eos_id], list(b"hi")) and tok.eos_id == 256

    class NewlineSeparated(ByteTokenizer):
        eos_id = 10

    # a continuation that starts with the prefix token keeps it as the context (lm-eval's rule)
    assert encode_pair(NewlineSeparated(), "", "\nhi") == ([10], list(b"hi"))


def test_scripted_loglikelihoods_exact(bigram):
    tok = ByteTokenizer()
    (ll_a, greedy_a), (ll_b, greedy_b) = score_requests(
        bigram, [encode_pair(tok, "Q:", " a"), encode_pair(tok, "Q:", " bbbb")]
    )
    assert ll_a == pytest.approx(-2 * LOG_VOCAB, abs=1e-4)
    expected_b = -2 * LOG_VOCAB + 3 * bigram.logprob(ord("b"), ord("b"))
    assert ll_b == pytest.approx(expected_b, abs=1e-4)
    assert not greedy_a and not greedy_b  # ' ' and the first 'b' are not argmax under a uniform row
    ll, greedy = score_requests(bigram, [(list(b"xb"), list(b"bbb"))])[0]
    assert greedy and ll == pytest.approx(3 * bigram.logprob(ord("b"), ord("b")), abs=1e-5)


def test_scripted_acc_and_acc_norm(bigram):
    """Uniform rows: ll = -n log 257 for n continuation bytes, so acc picks the shortest choice and acc_norm
    (ll / characters of the choice) the longest; the 'b' choices gain from the scripted bigram."""
    task = TASKS["arc_easy"]
    docs = [
        {
            "question": "q1",
            "choices": {"text": ["xy", "xyzw", "x"], "label": ["A", "B", "C"]},
            "answerKey": "C",
        },
        {
            "question": "q2",
            "choices": {"text": ["xy", "xyzw", "x"], "label": ["A", "B", "C"]},
            "answerKey": "B",
        },
        {"question": "q3", "choices": {"text": ["bbbbbb", "x"], "label": ["A", "B"]}, "answerKey": "A"},
        {"question": "q4", "choices": {"text": ["xx", "yy"], "label": ["A", "B"]}, "answerKey": "B"},
    ]
    res = evaluate_task(bigram, ByteTokenizer(), "arc_easy", docs)
    lb = bigram.logprob(ord("b"), ord("b"))
    assert res["lls"][0] == pytest.approx([-3 * LOG_VOCAB, -5 * LOG_VOCAB, -2 * LOG_VOCAB], abs=1e-3)
    assert res["lls"][2] == pytest.approx([-2 * LOG_VOCAB + 5 * lb, -2 * LOG_VOCAB], abs=1e-3)
    # doc1: acc (shortest=C) right, acc_norm (longest=B) wrong; doc2 the reverse; doc3: 'bbbbbb' loses on the
    # sum (5 nearly-free bytes) but wins per character; doc4: tie -> argmax takes the first index (A)
    assert res["acc"] == pytest.approx(1 / 4) and res["acc_norm"] == pytest.approx(2 / 4)
    assert mc_metrics(task, docs[2], res["lls"][2]) == {"acc": 0.0, "acc_norm": 1.0}
    assert mc_metrics(task, docs[0], res["lls"][0]) == {"acc": 1.0, "acc_norm": 0.0}
    assert mc_metrics(task, docs[1], res["lls"][1]) == {"acc": 0.0, "acc_norm": 1.0}
    assert mc_metrics(task, docs[3], res["lls"][3]) == {"acc": 0.0, "acc_norm": 0.0}


def test_winogrande_partial_scoring(bigram):
    """The options fill the blank in the *context*; the shared rest of the sentence is the scored
    continuation."""
    doc = {"sentence": "Tom met Ann so _ was happy.", "option1": "Tom", "option2": "Ann", "answer": "2"}
    task = TASKS["winogrande"]
    assert task.requests(doc) == [
        ("Tom met Ann so Tom", " was happy."),
        ("Tom met Ann so Ann", " was happy."),
    ]
    assert task.gold(doc) == 1
    res = evaluate_task(bigram, ByteTokenizer(), "winogrande", [doc])
    assert res["lls"][0] == pytest.approx([-11 * LOG_VOCAB] * 2, abs=1e-3)
    assert res["acc"] == 0.0  # tie -> first option


def test_lambada_metrics(bigram):
    docs = [{"text": "the cat sat on the mat"}, {"text": "xb bbb"}]
    res = evaluate_task(bigram, ByteTokenizer(), "lambada_openai", docs)
    lb = bigram.logprob(ord("b"), ord("b"))
    lls = [-4 * LOG_VOCAB, 2 * lb + bigram.logprob(ord(" "), ord("b")) + bigram.logprob(ord("b"), ord(" "))]
    assert res["lls"] == pytest.approx(lls, abs=1e-3)
    assert res["ppl"] == pytest.approx(math.exp(-sum(lls) / 2), rel=1e-3)
    assert res["acc"] == 0.0


def test_state_reset_and_order_invariance():
    """Each request starts from a fresh state: scores do not depend on order, batching or neighbours."""
    model = tiny_model()
    g = torch.Generator().manual_seed(1)
    reqs = [
        (
            torch.randint(32, 127, (n,), generator=g).tolist(),
            torch.randint(32, 127, (m,), generator=g).tolist(),
        )
        for n, m in [(5, 3), (40, 7), (17, 1), (90, 12), (33, 33), (5, 3)]
    ]
    forward = score_requests(model, reqs)
    backward = score_requests(model, reqs[::-1])[::-1]
    alone = [score_requests(model, [r])[0] for r in reqs]
    tiny_batches = score_requests(model, reqs, batch_tokens=1)
    for a, b, c, d in zip(forward, backward, alone, tiny_batches):
        assert a[0] == pytest.approx(b[0], abs=1e-4) and a[0] == pytest.approx(c[0], abs=1e-4)
        assert a[0] == pytest.approx(d[0], abs=1e-4) and a[1] == b[1] == c[1] == d[1]
    # equals a direct forward from a fresh state
    ctx, cont = reqs[3]
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ctx + cont[:-1]])).logits[0].float(), -1)
    direct = sum(lp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))
    assert forward[3][0] == pytest.approx(direct, abs=1e-4)


def test_windowed_scoring_and_truncation():
    model = tiny_model()
    reqs = [(list(range(40, 120)), list(range(50, 60)))]
    full = score_requests(model, reqs)[0][0]
    assert score_requests(model, reqs, window=13)[0][0] == pytest.approx(full, abs=1e-4)
    trunc = score_requests(model, reqs, max_length=30)[0][0]  # lm-eval: keep the last max_length + 1 tokens
    assert trunc == pytest.approx(
        score_requests(model, [(list(range(99, 120)), list(range(50, 60)))])[0][0], abs=1e-4
    )


def test_mc_task_requests_shape():
    t = MCTask("x", lambda d: "ctx", lambda d: ["a", "b"], lambda d: 1)
    assert t.requests({}) == [("ctx", " a"), ("ctx", " b")] and t.gold({}) == 1
