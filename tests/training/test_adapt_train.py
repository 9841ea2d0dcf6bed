"""train.py --set init_from=DIR: continual pretraining of a transformers model converted by hope.adapt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_helpers import train_args

import train
from hope.training.checkpoint import list_checkpoints

transformers = pytest.importorskip("transformers")


def test_train_continues_a_converted_model_and_writes_loadable_checkpoints(tmp_path: Path, corpus: Path) -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig

    from hope.adapt import cmsify

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=257, bos_token_id=0, eos_token_id=0)
    model = cmsify(AutoModelForCausalLM.from_config(cfg), levels=[8, None], step_init=0.1, verbose=False)
    src = tmp_path / "converted"
    model.save_pretrained(src)
    out = tmp_path / "run"
    result = train.main(train_args(corpus, out, f"init_from={src}", "max_steps=3", "lr=1e-2", "sample_tokens=5"))
    assert result["step"] == 3 and 0 < result["val_bpb"] < 10 and isinstance(result["sample"], str)
    ckpt = list_checkpoints(out / "checkpoints")[-1]
    trained = AutoModelForCausalLM.from_pretrained(ckpt)  # a train.py checkpoint is a save_pretrained folder
    assert type(trained) is type(model) and trained.config.hope_cms == model.config.hope_cms
    before, after = model.state_dict(), trained.state_dict()
    for name, p in before.items():
        assert torch.equal(p, after[name]) == (".mlp." not in name), name  # only the CMS modules trained
