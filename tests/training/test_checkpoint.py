"""Checkpoints: round trip, load_model, atomic directories, truncated/corrupt files, config mismatch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hope import HopeConfig, HopeLM
from hope.training.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_model,
    resolve_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from hope.training.config import TrainConfig

MICRO = dict(dim=32, n_layers=1, n_heads=2, cms_hidden=32, cms_chunk_sizes=(8, None), chunk_memory=4,
             chunk_other=8, vocab_size=257)


def setup(tie: bool = False, seed: int = 0) -> tuple[HopeConfig, HopeLM, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    cfg = HopeConfig.from_name("tiny", tie_embeddings=tie, **MICRO)
    model = HopeLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, 257, (2, 16))
    model(x, labels=x).loss.backward()
    opt.step()
    opt.zero_grad()
    return cfg, model, opt


def save(root: Path, step: int, cfg: HopeConfig, model: HopeLM, opt, keep_last: int = 2) -> Path:
    return save_checkpoint(root, step, model, opt, cfg, TrainConfig().to_dict(), {"tokens": step},
                           keep_last=keep_last)


@pytest.mark.parametrize("tie", [False, True])
def test_round_trip_and_load_model(tmp_path: Path, tie: bool) -> None:
    cfg, model, opt = setup(tie)
    ckpt = save(tmp_path / "checkpoints", 3, cfg, model, opt)
    assert ckpt.name == "step_00000003" and (ckpt / "model.safetensors").is_file()
    assert json.loads((ckpt / "config.json").read_text()) == cfg.to_dict()
    for where in (ckpt, tmp_path):  # a checkpoint or a run directory (its latest checkpoint)
        cfg2, model2 = load_model(where)
        assert cfg2 == cfg and not model2.training
        x = torch.randint(0, 257, (1, 12))
        assert torch.equal(model2(x).logits, model.eval()(x).logits)
        assert (model2.lm_head.weight is model2.embed.weight) == tie

    _, fresh, fresh_opt = setup(tie, seed=1)
    state, changed = load_checkpoint(ckpt, fresh, fresh_opt, cfg, TrainConfig().to_dict())
    assert state == {"tokens": 3, "step": 3} and changed == []
    for a, b in zip(fresh.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    sa, sb = fresh_opt.state_dict()["state"], opt.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sb)


def test_keep_last_and_incomplete_directories_are_ignored(tmp_path: Path) -> None:
    cfg, model, opt = setup()
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        save(root, step, cfg, model, opt, keep_last=2)
    (root / ".tmp-step_00000004").mkdir()  # a write killed before its rename
    assert [p.name for p in list_checkpoints(root)] == ["step_00000002", "step_00000003"]
    assert resolve_checkpoint(tmp_path).name == "step_00000003"
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        resolve_checkpoint(tmp_path / "elsewhere")


@pytest.mark.parametrize("damage, match", [
    ("truncate", "truncated"),
    ("flip", "SHA-256"),
    ("manifest", "no manifest.json: it is incomplete"),
    ("remove", "model.safetensors is missing"),
])
def test_damaged_checkpoint_is_never_loaded(tmp_path: Path, damage: str, match: str) -> None:
    cfg, model, opt = setup()
    ckpt = save(tmp_path, 5, cfg, model, opt)
    weights = ckpt / "model.safetensors"
    data = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(data[:-100])
    elif damage == "flip":
        weights.write_bytes(data[:-9] + bytes([data[-9] ^ 1]) + data[-8:])
    elif damage == "manifest":
        (ckpt / "manifest.json").unlink()
    else:
        weights.unlink()
    with pytest.raises(CheckpointError, match=match):
        load_model(ckpt)
    _, fresh, fresh_opt = setup(seed=1)
    before = [p.clone() for p in fresh.parameters()]
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(ckpt, fresh, fresh_opt, cfg, TrainConfig().to_dict())
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.parameters()))  # untouched


def test_corrupt_optimizer_state_is_caught(tmp_path: Path) -> None:
    cfg, model, opt = setup()
    ckpt = save(tmp_path, 1, cfg, model, opt)
    (ckpt / "optimizer.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="optimizer.pt"):
        verify_checkpoint(ckpt)


def test_checkpoint_from_another_config_says_what_differs(tmp_path: Path) -> None:
    cfg, model, opt = setup()
    ckpt = save(tmp_path, 1, cfg, model, opt)
    other = HopeConfig.from_name("tiny", **{**MICRO, "dim": 64})
    with pytest.raises(CheckpointError, match=r"another model config: dim: 32 in the checkpoint, 64 now"):
        load_checkpoint(ckpt, HopeLM(other), opt, other, TrainConfig().to_dict())
    with pytest.raises(CheckpointError, match=r"other data: tokenizer: 'byte' in the checkpoint, 'gpt2' now"):
        load_checkpoint(ckpt, model, opt, cfg, TrainConfig(tokenizer="gpt2").to_dict())
    _, changed = load_checkpoint(ckpt, model, opt, cfg, TrainConfig(max_steps=7).to_dict())
    assert changed == ["max_steps"]
