"""Run logging: JSONL metrics, truncation on resume, the loss curve, W&B optional."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from hope.training.logging import RunLogger, plot_loss_curve, read_metrics


def test_metrics_jsonl_resume_truncation_and_curve(tmp_path: Path, capsys) -> None:
    log = RunLogger(tmp_path, total_steps=6, progress=False)
    for step in range(1, 6):
        log.log(step, {"loss": 1 / step, "tokens": 10 * step})
    log.log(5, {"tokens": 50, "val_loss": 0.3}, bar=False)
    log.close()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "loss": 0.1')  # a line cut by a kill
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")[:6]] == [1, 2, 3, 4, 5, 5]

    RunLogger(tmp_path, total_steps=6, start_step=3, progress=False).close()  # resumed at step 3
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3] and records[2]["loss"] == 1 / 3  # full precision
    png = plot_loss_curve(tmp_path / "metrics.jsonl", tmp_path / "loss.png", title="t")
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"

    RunLogger(tmp_path, total_steps=6, start_step=0, progress=False).close()  # a fresh run starts over
    assert not (tmp_path / "metrics.jsonl").exists()


def test_only_the_main_process_writes(tmp_path: Path) -> None:
    log = RunLogger(tmp_path / "r1", total_steps=2, enabled=False)
    log.log(1, {"loss": math.nan})
    log.print("hidden")
    assert not (tmp_path / "r1").exists()


def test_wandb_missing_is_a_notice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    log = RunLogger(tmp_path, total_steps=1, progress=False, wandb_project="hope")
    log.log(1, {"loss": 1.0})
    log.close()
    assert "wandb is not installed: skipping Weights & Biases logging" in capsys.readouterr().out
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "loss": 1.0}
