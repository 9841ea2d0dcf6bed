"""Run logging: a progress bar (loss, tokens/s, ETA), a JSONL metrics file, optional Weights & Biases,
and a loss-curve PNG at the end. Only the main process logs; the others get a silent logger."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any


class RunLogger:
    """``log(step, metrics)`` appends ``{"step": ..., **metrics}`` to ``metrics.jsonl`` (floats at full
    precision) and updates the progress bar; ``print`` writes a line without breaking the bar."""

    def __init__(self, out_dir: str | Path, total_steps: int, start_step: int = 0, enabled: bool = True,
                 progress: bool = True, wandb_project: str | None = None, wandb_mode: str = "offline",
                 run_config: dict[str, Any] | None = None) -> None:
        self.enabled, self.path = enabled, Path(out_dir) / "metrics.jsonl"
        self.bar, self.wandb = None, None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        truncate_metrics(self.path, start_step)
        if progress:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                                file=sys.stderr)
            except ImportError:
                self.print("tqdm is not installed: logging lines instead of a progress bar")
        if wandb_project:
            try:
                import wandb

                self.wandb = wandb.init(project=wandb_project, mode=wandb_mode, config=run_config or {},
                                        dir=str(self.path.parent), resume="allow")
            except ImportError:
                self.print("wandb is not installed: skipping Weights & Biases logging (pip install wandb)")

    def print(self, msg: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def log(self, step: int, metrics: dict[str, Any], bar: bool = True) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)
        if self.bar is not None and bar:
            self.bar.n = step
            post = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in metrics.items()
                    if k in ("loss", "tok_s", "lr", "val_bpb")}
            self.bar.set_postfix(post, refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()


def truncate_metrics(path: Path, start_step: int) -> None:
    """Drop records after ``start_step`` (a resumed run recomputes them): one value per step."""
    if not path.exists():
        return
    if start_step == 0:
        path.unlink()
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if rec.get("step", 0) <= start_step:
            keep.append(line)
    path.write_text("".join(line + "\n" for line in keep))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics file (a last line cut by a kill is skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_loss_curve(metrics_path: str | Path, png_path: str | Path, title: str = "") -> Path | None:
    """Training loss (and held-out loss when logged) against tokens; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    records = read_metrics(metrics_path)
    train = [(r["tokens"], r["loss"]) for r in records if "loss" in r and math.isfinite(r["loss"])]
    val = [(r["tokens"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="held-out loss")
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return Path(png_path)
