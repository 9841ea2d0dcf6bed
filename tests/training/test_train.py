"""train.py end to end on micro models: outputs, resume, accumulation, NaN skipping and aborting, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from training_helpers import losses, run_train, train_args

import train
from hope.training.checkpoint import CheckpointError, list_checkpoints, load_model, verify_checkpoint


def test_train_writes_metrics_checkpoints_curve_and_sample(tmp_path: Path, corpus: Path, capsys) -> None:
    out = tmp_path / "run"
    result = train.main(train_args(corpus, out, "max_steps=8", "ckpt_every=4", "eval_every=4", "lr=1e-2",
                                   "sample_tokens=8", "sample_prompt=The"))
    assert result["step"] == 8 and result["tokens"] == 8 * 2 * 32
    assert 0 < result["val_bpb"] < 8 and result["sample"].startswith("The")
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_00000004", "step_00000008"]
    assert (out / "loss.png").stat().st_size > 1000
    curve = losses(out)
    assert list(curve) == list(range(1, 9)) and curve[8] < curve[1] - 0.3  # it learns
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val_bpb" in r for r in records[:-1]) and "val_bpb" in records[-1]
    assert "held-out" in capsys.readouterr().out
    cfg, model = load_model(out)
    assert cfg.vocab_size == 257 and cfg.dim == 32

    # a later run with more steps resumes from the latest checkpoint and continues the same curve
    result = train.main(train_args(corpus, out, "max_steps=10", "ckpt_every=4", "lr=1e-2"))
    assert result["step"] == 10 and list(losses(out)) == list(range(1, 11))
    assert "changed settings: eval_every, max_steps, sample_prompt, sample_tokens" in capsys.readouterr().out


def test_gradient_accumulation_matches_the_big_batch(tmp_path: Path, corpus: Path) -> None:
    big = train.main(train_args(corpus, tmp_path / "big", "max_steps=3", "batch_size=4"))
    acc = train.main(train_args(corpus, tmp_path / "acc", "max_steps=3", "batch_size=2", "batch_tokens=128"))
    assert big["tokens"] == acc["tokens"] == 3 * 128
    a, b = losses(tmp_path / "big"), losses(tmp_path / "acc")
    assert all(math.isclose(a[s], b[s], rel_tol=1e-5) for s in a), (a, b)


def test_non_finite_loss_skips_the_step(tmp_path: Path, corpus: Path, capsys) -> None:
    out = tmp_path / "run"
    train.main(train_args(corpus, out, "max_steps=5", "debug_nan_steps=[2, 3]", "max_bad_steps=3"))
    curve = losses(out)
    assert math.isnan(curve[2]) and math.isnan(curve[3]) and all(math.isfinite(curve[s]) for s in (1, 4, 5))
    assert "step 3: non-finite loss nan / grad norm nan: step skipped (2 in a row, abort at 3)" \
        in capsys.readouterr().out
    _, model = load_model(out)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_too_many_non_finite_losses_abort_with_the_last_good_checkpoint(tmp_path: Path, corpus: Path,
                                                                         capsys) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        train.main(train_args(corpus, out, "max_steps=12", "ckpt_every=2", "max_bad_steps=3",
                              "debug_nan_steps=[5, 6, 7, 8, 9, 10, 11, 12]"))
    assert exc.value.code == 3
    printed = capsys.readouterr().out
    assert "step 7: 3 non-finite losses in a row" in printed
    ckpts = list_checkpoints(out / "checkpoints")
    assert [p.name for p in ckpts] == ["step_00000002", "step_00000004"]  # none written during the streak
    assert "the last good checkpoint is " + str(ckpts[-1]) in printed
    verify_checkpoint(ckpts[-1])
    assert max(losses(out)) == 7


def test_resuming_with_another_model_config_says_what_differs(tmp_path: Path, corpus: Path) -> None:
    out = tmp_path / "run"
    train.main(train_args(corpus, out, "max_steps=2"))
    with pytest.raises(CheckpointError, match="another model config: dim: 32 in the checkpoint, 64 now"):
        train.main(train_args(corpus, out, "max_steps=4", "model.dim=64"))


def test_model_vocabulary_smaller_than_the_tokenizer(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(ValueError, match="vocab_size=200 is smaller than the tokenizer's vocabulary"):
        train.main(train_args(corpus, tmp_path / "run", "model.vocab_size=200"))


def test_optimizer_by_name(tmp_path: Path, corpus: Path) -> None:
    pytest.importorskip("hope.optim")
    result = train.main(train_args(corpus, tmp_path / "run", "max_steps=2", "optimizer=muon", "lr=0.02"))
    assert result["step"] == 2 and math.isfinite(losses(tmp_path / "run")[2])
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        train.main(train_args(corpus, tmp_path / "run2", "optimizer=adam"))


def test_bf16_autocast_trains(tmp_path: Path, corpus: Path) -> None:
    """dtype=bfloat16 (the default on CUDA) runs on CPU too: bf16 projections, fp32 memory updates."""
    result = train.main(train_args(corpus, tmp_path / "run", "max_steps=3", "dtype=bfloat16", "lr=1e-2"))
    assert result["step"] == 3 and all(math.isfinite(v) for v in losses(tmp_path / "run").values())


def test_cli_reports_a_bad_key(tmp_path: Path, corpus: Path) -> None:
    proc = run_train(["--config", "configs/tiny.yaml", "--set", "max_step=3"], check=False, timeout=120)
    assert proc.returncode != 0 and "unknown train config key(s) ['max_step']" in proc.stderr
