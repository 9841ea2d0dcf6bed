"""HOPE's mechanisms as switches: frozen evaluation, CMS persistence across context resets, multi-frequency."""

import pytest
import torch
from clhelpers import tiny_lm

from hope.continual import METHODS, cipher_stream
from hope.continual.hope_switches import adaptive_levels, cms_param_groups, frozen_in_context, write_back_cms
from hope.optim import MultiFrequency


def test_frozen_evaluation_changes_no_fast_state():
    model = tiny_lm("smt").eval()
    ids = torch.randint(0, 256, (2, 21))  # longer than every chunk (4, 8)
    etas = [lvl.eta.item() for lvl in adaptive_levels(model)]
    with torch.no_grad():
        adaptive = model(ids)
        with frozen_in_context(model):
            frozen = model(ids)
    assert [lvl.eta.item() for lvl in adaptive_levels(model)] == etas  # restored exactly
    assert not torch.allclose(adaptive.logits, frozen.logits)  # the in-context updates matter
    for block, (mixer_state, cms_state) in zip(model.blocks, frozen.state):
        for lvl, s in zip(block.cms.levels, cms_state):
            if s is not None:
                start = torch.cat([lvl.w_gate, lvl.w_up], dim=0)
                assert torch.equal(s.w_in.expand(2, *start.shape), start.expand(2, *start.shape))
        init = block.mixer.init_state(2)
        assert torch.equal(mixer_state.mem.w1, init.mem.w1) and torch.equal(mixer_state.mem.w2, init.mem.w2)
    for block, (mixer_state, _) in zip(model.blocks, adaptive.state):  # while adaptive ones do move
        assert not torch.equal(mixer_state.mem.w1, block.mixer.init_state(2).mem.w1)


def test_write_back_cms_persists_fast_weights():
    model = tiny_lm("smt")
    with torch.no_grad():
        out = model(torch.randint(0, 256, (3, 17)))
    n = write_back_cms(model, out.state)
    assert n == 2 * 2  # two blocks x two in-context levels
    lvl, s = model.blocks[0].cms.levels[0], out.state[0][1][0]
    f = lvl.hidden
    torch.testing.assert_close(lvl.w_gate, s.w_in.mean(0)[:f])
    torch.testing.assert_close(lvl.w_down, s.w_out.mean(0))
    with pytest.raises(ValueError, match="HopeLM"):
        write_back_cms(model, out.state[:1])


def test_persist_cms_learner_differs_from_reset():
    stream = cipher_stream(1, 4, 0.0, 2, 1)
    batch = stream.experiences[0].train[:4]
    a = METHODS["naive"](tiny_lm("smt"), max_len=16)
    b = METHODS["naive"](tiny_lm("smt"), max_len=16, persist_cms=True)
    a.observe(batch)
    b.observe(batch)
    la, lb = a.model.blocks[0].cms.levels[0], b.model.blocks[0].cms.levels[0]
    assert not torch.equal(la.w_gate, lb.w_gate)
    static_a, static_b = a.model.blocks[0].cms.levels[2], b.model.blocks[0].cms.levels[2]
    assert torch.equal(static_a.w_gate, static_b.w_gate)  # static levels have no fast state to persist


def test_cms_param_groups_frequencies():
    model = tiny_lm("smt")  # CMS chunk sizes (4, 8, None)
    groups = cms_param_groups(model)
    by_every: dict[int, int] = {}
    for g in groups:
        by_every[g["every"]] = by_every.get(g["every"], 0) + sum(p.numel() for p in g["params"])
    assert sorted(by_every) == [1, 2, 4]  # C=4 -> 1 (with the non-CMS params), C=8 -> 2, static -> 2 * 2
    total = sum(p.numel() for p in model.parameters())
    assert sum(by_every.values()) == total
    lvl8 = model.blocks[0].cms.levels[1]
    assert any(g["every"] == 2 and any(p is lvl8.w_up for p in g["params"]) for g in groups)
    learner = METHODS["naive"](model, max_len=16, multi_frequency=True)
    assert isinstance(learner.optimizer, MultiFrequency)
    static = model.blocks[0].cms.levels[2].w_gate
    before = static.detach().clone()
    batch = cipher_stream(1, 4, 0.0, 2, 1).experiences[0].train[:4]
    for _ in range(3):
        learner.observe(batch)
    assert torch.equal(static, before)  # the static level steps every 4th call only
    learner.observe(batch)
    assert not torch.equal(static, before)
    with pytest.raises(ValueError, match="no CMS"):
        cms_param_groups(torch.nn.Linear(2, 2))
