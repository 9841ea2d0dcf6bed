"""HopeLM: causality, streaming, per-sequence state, generation, gradients, backend parity, input errors."""

import pytest
import torch

from hope import HopeConfig, HopeLM
from tests.helpers import micro_config

MIXERS = ["smt", "titans", "attention"]


def model_for(mixer, **kw):
    torch.manual_seed(0)
    return HopeLM(micro_config(mixer, **kw)).eval()


@pytest.mark.parametrize("mixer", MIXERS)
def test_causality(mixer):
    """Changing tokens after position t leaves the logits up to t unchanged."""
    m = model_for(mixer)
    x = torch.randint(0, 64, (2, 29))
    t = 13
    y = x.clone()
    y[:, t + 1 :] = torch.randint(0, 64, (2, 29 - t - 1))
    with torch.no_grad():
        a, b = m(x).logits, m(y).logits
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :], atol=1e-4)


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("splits", [(12,), (5, 9), (1, 2, 3, 17, 30)])
def test_streaming_equals_one_call(mixer, splits):
    """One call equals several calls with the state passed along (splits on and off chunk boundaries)."""
    m = model_for(mixer)
    x = torch.randint(0, 64, (2, 37))
    with torch.no_grad():
        full = m(x).logits
        bounds, state, parts = [0, *splits, 37], None, []
        for s, e in zip(bounds[:-1], bounds[1:]):
            out = m(x[:, s:e], state=state)
            parts.append(out.logits)
            state = out.state
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mixer", MIXERS)
def test_batch_permutation_permutes_outputs(mixer):
    """No state is shared across the batch."""
    m = model_for(mixer)
    x = torch.randint(0, 64, (4, 21))
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        a, b = m(x).logits, m(x[perm]).logits
    torch.testing.assert_close(b, a[perm], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mixer", MIXERS)
def test_greedy_generate_equals_argmax_of_full_forward(mixer):
    m = model_for(mixer)
    prompt = torch.randint(0, 64, (2, 9))
    new = m.generate(prompt, max_new_tokens=12)
    seq = prompt
    with torch.no_grad():
        for _ in range(12):
            seq = torch.cat([seq, m(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(new, seq[:, 9:])


def test_sampling_is_seeded_and_respects_top_k():
    m = model_for("smt")
    prompt = torch.randint(0, 64, (2, 5))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = m.generate(prompt, 8, temperature=1.0, top_k=1, generator=g1)
    b = m.generate(prompt, 8, temperature=1.0, top_k=1, generator=g2)
    assert torch.equal(a, b)
    assert torch.equal(a, m.generate(prompt, 8))  # top-1 sampling is greedy


def test_every_parameter_gets_a_gradient():
    """A tiny HOPE (the preset) gives a non-zero gradient to every parameter: initial memory states, gates,
    projections, CMS step sizes (the sequence outlasts the slowest in-context level's chunk)."""
    cfg = HopeConfig.from_name("tiny", backend="chunk")
    m = HopeLM(cfg)
    slowest = max(c for c in cfg.cms_chunk_sizes if c is not None)
    x = torch.randint(0, cfg.vocab_size, (1, slowest + 8))
    m(x, labels=x).loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("mixer,choice", [("smt", None), ("titans", None), ("smt", "dgd_damping"),
                                          ("smt", "unit_targets"), ("smt", "velocity_decay"), ("smt", "cms_unit_kv")])
def test_naive_and_chunk_backends_agree_on_logits_and_gradients(mixer, choice):
    """Also with each modelling-choice flag of HopeConfig off (the ablations of the evidence study)."""
    torch.manual_seed(0)
    off = {} if choice is None else {choice: False}
    a = HopeLM(micro_config(mixer, backend="chunk", **off))
    b = HopeLM(micro_config(mixer, backend="naive", **off))
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, 64, (2, 19))
    la, lb = a(x, labels=x), b(x, labels=x)
    torch.testing.assert_close(la.logits, lb.logits, rtol=1e-4, atol=1e-4)
    la.loss.backward()
    lb.loss.backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-3, atol=1e-5, msg=lambda m: f"{name}: {m}")  # noqa: B023


@pytest.mark.parametrize("choice", ["dgd_damping", "unit_targets", "velocity_decay", "cms_unit_kv"])
def test_each_modelling_choice_flag_reaches_the_model(choice):
    torch.manual_seed(0)
    a = HopeLM(micro_config())
    b = HopeLM(micro_config(**{choice: False}))
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, 64, (2, 19))
    assert not torch.allclose(a(x).logits, b(x).logits, atol=1e-5)


def test_loss_is_next_token_cross_entropy_with_ignore_index():
    m = model_for("attention")
    x = torch.randint(0, 64, (2, 10))
    labels = x.clone()
    labels[:, 5:] = -100
    out = m(x, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :4].reshape(-1, 64), x[:, 1:5].reshape(-1))
    torch.testing.assert_close(out.loss, expected)


def test_bad_inputs_give_clear_errors():
    m = model_for("smt")
    with pytest.raises(ValueError, match="out of range"):
        m(torch.tensor([[1, 64]]))
    with pytest.raises(ValueError, match="batch, time"):
        m(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="state has 1 entries"):
        m(torch.tensor([[1, 2]]), state=[None])
    with pytest.raises(ValueError, match="at least one token"):
        m.generate(torch.zeros(1, 0, dtype=torch.long))


def test_long_streams_stay_finite():
    """The in-context updates stay bounded on long constant, random and periodic streams at random init
    (the failure modes that shaped docs/semantics.md: repeated tokens, self-generated targets, CMS steps)."""
    torch.manual_seed(1)
    m = HopeLM(HopeConfig.from_name("tiny")).eval()
    streams = [torch.full((1, 3000), 33), torch.randint(0, 256, (1, 3000)), torch.arange(3000)[None] % 7]
    with torch.no_grad():
        for x in streams:
            assert torch.isfinite(m(x).logits).all()


def test_titans_class_is_the_static_kv_variant():
    from hope import SelfModifyingTitans, Titans

    torch.manual_seed(0)
    plain = Titans(32, 2, chunk_memory=4)
    assert not plain.self_modifying and not hasattr(plain, "kv_w1")
    smt = SelfModifyingTitans(32, 2, chunk_memory=4)
    assert {n for n, _ in smt.named_parameters()} - {n for n, _ in plain.named_parameters()} == {"kv_w1", "kv_w2"}
    y, state = plain(torch.randn(2, 9, 32))
    assert y.shape == (2, 9, 32) and state.kv is None


@pytest.mark.parametrize("mixer", ["smt", "titans"])
def test_bf16_autocast_keeps_the_fast_state_in_fp32(mixer):
    """Under bf16 autocast (train.py's GPU default) the memory and CMS updates run in fp32: the step trains,
    the in-context state stays fp32 and the loss is the fp32 loss up to bf16 rounding of the projections."""
    torch.manual_seed(0)
    model = HopeLM(HopeConfig.from_name("tiny", mixer=mixer))
    x = torch.randint(0, 256, (2, 160))  # every in-context level completes a chunk
    ref = model(x, labels=x).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, labels=x)
    out.loss.backward()
    assert torch.isfinite(out.loss) and abs(out.loss.item() - ref.item()) < 0.02 * ref.item()
    mixer_state, cms_state = out.state[0]
    assert mixer_state.mem.w1.dtype == mixer_state.mem.v1.dtype == torch.float32
    assert cms_state[0].w_in.dtype == torch.float32
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("mixer", ["smt", "titans"])
def test_compiled_blocks_break_around_the_memory_ops(mixer):
    """``train.compile`` compiles each block; the memory ops stay out of its graphs (``torch.compiler.disable``), so
    the graphs do not grow with the number of chunks, and the compiled model computes what the eager one does."""
    import torch._dynamo

    def compiled_nodes(seq_len: int) -> tuple[int, torch.Tensor, list[torch.Tensor]]:
        torch._dynamo.reset()
        nodes = []

        def backend(gm, example_inputs):  # dynamo's graphs, run eagerly; counts their nodes, nested ones included
            nodes.append(sum(len(m.graph.nodes) for m in gm.modules() if isinstance(m, torch.fx.GraphModule)))
            return gm.forward

        torch.manual_seed(0)
        model = HopeLM(micro_config(mixer))
        for block in model.blocks:
            block.compile(backend=backend)
        x = torch.randint(0, 64, (2, seq_len))
        loss = model(x, labels=x).loss
        loss.backward()
        return sum(nodes), loss, [p.grad for p in model.parameters()]

    short, long = compiled_nodes(12), compiled_nodes(48)  # 3 and 12 chunks of the main memory, 2 and 8 of M_k, M_v
    torch._dynamo.reset()
    assert short[0] > 0 and short[0] == long[0]
    torch.manual_seed(0)
    eager = HopeLM(micro_config(mixer))
    x = torch.randint(0, 64, (2, 48))
    loss = eager(x, labels=x).loss
    loss.backward()
    torch.testing.assert_close(long[1], loss)
    for g, p in zip(long[2], eager.parameters()):
        torch.testing.assert_close(g, p.grad)
