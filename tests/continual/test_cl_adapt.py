"""A pretrained transformers model converted by ``hope.adapt.cmsify`` is one more learner of the continual
harness: the protocol runs it, its frozen backbone stays frozen, and evaluation leaves it bit-identical."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from hope.adapt import HopeInterface, cmsify  # noqa: E402
from hope.continual import METHODS, Protocol, cipher_stream  # noqa: E402


def test_cmsified_llama_runs_in_the_continual_harness() -> None:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=257, bos_token_id=256, eos_token_id=256,
                                   pad_token_id=None, initializer_range=0.1)
    hf = cmsify(transformers.AutoModelForCausalLM.from_config(cfg), levels=[4, None], train="cms",
                step_init=0.5, verbose=False)
    model = HopeInterface(hf)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert frozen and any(p.requires_grad for p in model.parameters())
    learner = METHODS["replay"](model, lr=3e-3, max_len=16)
    result = Protocol(cipher_stream(n_tasks=2, alphabet=6, train_per_letter=4, test_per_letter=1), batch_size=8,
                      check_restore=True).run(learner)  # check_restore: evaluation must leave the state bit-identical
    acc = result.acc_matrix
    assert len(acc) == 2 and all(len(row) == 2 and all(0.0 <= a <= 1.0 for a in row) for row in acc)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], p) for n, p in frozen.items())  # the backbone stayed frozen
    assert any(not torch.equal(params[n], p) for n, p in trained.items())  # the CMS parts learned
