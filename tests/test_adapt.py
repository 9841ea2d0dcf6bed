"""hope.adapt: CMS levels seeded from a pretrained transformers model's MLPs (ad-hoc level stacking)."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    StaticCache,
)

from hope.adapt import CMSMLP, CMSCache, HopeInterface, cmsify, parse_levels  # noqa: E402
from hope.adapt.convert import main as adapt_main  # noqa: E402

V = 64


def config(family: str):
    small = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=V, bos_token_id=0, eos_token_id=0, pad_token_id=None,
                 initializer_range=0.1)
    if family == "llama":
        return LlamaConfig(**small)
    if family == "qwen2":
        return Qwen2Config(**small)
    if family == "mistral":
        return MistralConfig(**small)
    return GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=V, bos_token_id=0, eos_token_id=0, n_positions=256,
                      initializer_range=0.1)


def base_model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config(family)).eval()


def ids(T: int, B: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, V, (B, T), generator=torch.Generator().manual_seed(seed))


def set_step(model, step: float) -> None:
    """Give every in-context level the step size eta = step / chunk_size."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, CMSMLP):
                for level in m.cms.levels:
                    if level.chunk_size is not None:
                        level.eta.fill_(step / level.chunk_size)


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral", "gpt2"])
@pytest.mark.parametrize("seed,layers", [("copy", "all"), ("split", [1])])
def test_step_size_zero_gives_the_original_logits(family, seed, layers):
    model = base_model(family)
    x = ids(50)
    with torch.no_grad():
        ref = model(x).logits
    cmsify(model, levels=[4, 16, None], layers=layers, seed=seed, verbose=False)
    assert type(model).__name__.startswith("CMS") and model.config.model_type.endswith("_hope_cms")
    n_cms = sum(isinstance(m, CMSMLP) for m in model.modules())
    assert n_cms == (2 if layers == "all" else 1)
    with torch.no_grad():
        out = model(x)
    torch.testing.assert_close(out.logits, ref, rtol=1e-5, atol=1e-5)
    assert isinstance(out.cache, CMSCache) and len(out.cache.cms_state) == n_cms


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_positive_step_learns_in_context_and_streams(family):
    model = cmsify(base_model(family), levels=[4, 16, None], verbose=False)
    x = ids(70)
    with torch.no_grad():
        frozen = model(x).logits
        set_step(model, 0.5)
        full = model(x)
    diff = (full.logits - frozen).abs().amax(dim=(0, 2))
    assert diff[:4].max() < 1e-6, "tokens of the first chunk are read with the seeded weights"
    assert diff[40:].min() > 1e-3, "later tokens are read with weights that learned from the context"
    with torch.no_grad():
        cache, parts = None, []
        for s, e in [(0, 3), (3, 21), (21, 22), (22, 70)]:  # splits inside chunks of both levels
            out = model(x[:, s:e], cache=cache)
            cache = out.cache
            parts.append(out.logits)
    torch.testing.assert_close(torch.cat(parts, 1), full.logits, rtol=1e-4, atol=1e-5)
    assert cache.get_seq_length() == 70


@pytest.mark.parametrize("train", ["cms", "cms+norms", "all"])
def test_frozen_backbone_only_chosen_parameters_change(train):
    model = cmsify(base_model("llama"), levels=[4, None], train=train, step_init=0.2, verbose=False).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = ids(24)
    model(x, labels=x).loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        chosen = ".mlp." in n or train == "all" or (train == "cms+norms" and "norm" in n)
        changed = not torch.equal(p.detach(), before[n])
        assert p.requires_grad == chosen, n
        assert changed == chosen, f"{n}: changed={changed}, chosen={chosen}"


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_save_load_round_trip_and_generate_equal_the_original(family, tmp_path):
    original = base_model(family)
    prompt = ids(6, B=1)
    want = original.generate(prompt, max_new_tokens=12, do_sample=False)
    model = cmsify(base_model(family), levels=[4, 16, None], verbose=False)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model) and loaded.config.hope_cms == model.config.hope_cms
    assert [p.requires_grad for p in loaded.parameters()] == [p.requires_grad for p in model.parameters()]
    for a, b in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert a[0] == b[0] and torch.equal(a[1], b[1]), a[0]
    got = loaded.generate(prompt, max_new_tokens=12, do_sample=False)
    assert got.tolist() == want.tolist()


def test_generate_carries_the_cms_state():
    """With a positive step size, greedy generate (one token per step through the cache) equals greedy decoding
    that re-reads the whole sequence from a fresh state at every step."""
    model = cmsify(base_model("llama"), levels=[3, 8, None], step_init=0.5, verbose=False)
    model.generation_config.eos_token_id = None  # always 14 new tokens
    seq = ids(5, B=1)
    got = model.generate(seq, max_new_tokens=14, do_sample=False)
    with torch.no_grad():
        for _ in range(14):
            nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert got.tolist() == seq.tolist()
    beams = model.generate(ids(5, B=1), max_new_tokens=6, do_sample=False, num_beams=2)  # reorders the state
    assert beams.shape == (1, 11)


def test_hope_interface_streams_through_its_state():
    """HopeLM's contract (model(ids, state=...) -> logits, loss, state), as the continual harness and eval/ use."""
    lm = HopeInterface(cmsify(base_model("gpt2"), levels=[4, None], step_init=0.5, verbose=False)).eval()
    x = ids(30)
    with torch.no_grad():
        full = lm(x, labels=x)
        a = lm(x[:, :13])
        b = lm(x[:, 13:], state=a.state)
    torch.testing.assert_close(torch.cat([a.logits, b.logits], 1), full.logits, rtol=1e-4, atol=1e-5)
    assert full.loss is not None and lm.generate(x[:1, :3], max_new_tokens=4).shape == (1, 4)


def test_convert_cli_round_trip(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    base_model("gpt2").save_pretrained(src)
    adapt_main(["convert", str(src), str(out), "--levels", "4,static", "--train", "cms+norms"])
    x = ids(20)
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(src).eval()(x).logits
        loaded = AutoModelForCausalLM.from_pretrained(out).eval()
        got = loaded(x).logits
    assert loaded.config.hope_cms["levels"] == [4, None] and loaded.config.hope_cms["train"] == "cms+norms"
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_clear_errors():
    model = cmsify(base_model("llama"), levels="4,static", verbose=False)
    x = ids(8)
    with pytest.raises(ValueError, match="padding"):
        model(x, attention_mask=torch.tensor([[1] * 8, [0] + [1] * 7]))
    with pytest.raises(TypeError, match="CMSCache"):
        model(x, cache=StaticCache(config=model.config, max_cache_len=16))
    with pytest.raises(NotImplementedError, match="rolled back"):
        model(x).cache.crop(2)
    with pytest.raises(ValueError, match="already CMS-converted"):
        cmsify(model)
    with pytest.raises(TypeError, match="causal LM"):
        cmsify(base_model("llama").model)
    with pytest.raises(ValueError, match="layers \\[5\\] do not exist"):
        cmsify(base_model("llama"), layers=[5])
    with pytest.raises(ValueError, match="chunk size"):
        parse_levels([0, None])
    with pytest.raises(ValueError, match="train="):
        cmsify(base_model("llama"), train="backbone")
    bad = base_model("llama")
    bad.config.hidden_act = "relu"
    with pytest.raises(ValueError, match="activation 'relu'"):
        cmsify(bad)
    static = cmsify(base_model("llama"), levels=[None], verbose=False)  # no in-context level: padding is fine
    static(x, attention_mask=torch.tensor([[1] * 8, [0] + [1] * 7]))
