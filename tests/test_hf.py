"""hope.hf: save/load round trip in safetensors, Auto classes, generate with the recurrent cache,
conversion."""

from __future__ import annotations

import json
import os

import pytest
import torch

pytest.importorskip("transformers", reason="transformers not installed (pip install hope-nl[hf])")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from safetensors.torch import save_file  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from hope import HopeConfig, HopeLM  # noqa: E402
from hope.hf import HopeCache, HopeForCausalLM, HopeHFConfig, main  # noqa: E402


def tiny(mixer: str = "smt", **kw) -> HopeLM:
    torch.manual_seed(0)
    cfg = HopeConfig(
        vocab_size=64,
        dim=32,
        n_layers=2,
        n_heads=2,
        mixer=mixer,
        cms_chunk_sizes=(4, None),
        cms_hidden=48,
        chunk_memory=4,
        chunk_other=4,
        max_seq_len=128,
        **kw,
    )
    return HopeLM(cfg).eval()


@pytest.mark.parametrize("mixer,tie", [("smt", False), ("attention", False), ("titans", True)])
def test_round_trip_and_generate(tmp_path, mixer, tie):
    ref = tiny(mixer, tie_embeddings=tie)
    HopeForCausalLM.from_hope(ref).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert AutoConfig.from_pretrained(tmp_path).to_hope_config() == ref.config
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(hf, HopeForCausalLM)
    x = torch.randint(1, 64, (2, 9))
    with torch.no_grad():
        assert torch.equal(hf(x).logits, ref(x).logits)
    want = ref.generate(x, max_new_tokens=12)
    got = hf.generate(
        x, attention_mask=torch.ones_like(x), max_new_tokens=12, do_sample=False, pad_token_id=0
    )
    assert torch.equal(got[:, 9:], want)


def test_cache_carries_state_one_token_per_step():
    ref = tiny()
    hf = HopeForCausalLM.from_hope(ref).eval()
    x = torch.randint(1, 64, (1, 10))
    with torch.no_grad():
        out = hf(x[:, :7], use_cache=True)
        assert isinstance(out.past_key_values, HopeCache) and out.past_key_values.get_seq_length() == 7
        step = hf(x[:, 7:8], past_key_values=out.past_key_values)
        inputs = hf.prepare_inputs_for_generation(x[:, :8], past_key_values=step.past_key_values)
        assert inputs["input_ids"].shape[1] == 0  # the cache has seen all 8 tokens
        full = ref(x[:, :8]).logits[:, -1]
    assert torch.allclose(step.logits[:, -1], full, atol=1e-5)


def test_beam_search_reorders_the_cache():
    hf = HopeForCausalLM.from_hope(tiny()).eval()
    x = torch.randint(1, 64, (2, 6))
    kw = dict(
        attention_mask=torch.ones_like(x), max_new_tokens=6, num_beams=3, do_sample=False, pad_token_id=0
    )
    assert torch.equal(hf.generate(x, **kw), hf.generate(x, use_cache=False, **kw))


def test_padding_is_rejected():
    hf = HopeForCausalLM.from_hope(tiny()).eval()
    with pytest.raises(ValueError, match="padding"):
        hf(torch.ones(1, 4, dtype=torch.long), attention_mask=torch.tensor([[0, 1, 1, 1]]))


def test_convert_train_checkpoint(tmp_path, capsys):
    ref = tiny()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_file(
        {f"_orig_mod.{k}": v.contiguous() for k, v in ref.state_dict().items()},
        str(ckpt / "model.safetensors"),
    )
    (ckpt / "config.json").write_text(json.dumps(ref.config.to_dict()))
    main(["convert", str(ckpt), str(tmp_path / "hf")])
    assert "model_type=hope" in capsys.readouterr().out
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    x = torch.randint(1, 64, (1, 11))
    with torch.no_grad():
        assert torch.equal(hf(x).logits, ref(x).logits)
    from hope.training.checkpoint import load_model  # the one reader reads both layouts

    for path in (ckpt, tmp_path / "hf"):
        _, m = load_model(path)
        with torch.no_grad():
            assert torch.equal(m(x).logits, ref(x).logits)


def test_config_validates():
    with pytest.raises(ValueError):
        HopeHFConfig(mixer="nope")
    assert HopeHFConfig(dim=64, n_heads=4).max_position_embeddings == HopeConfig().max_seq_len
