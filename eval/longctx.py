"""Long-context probes: passkey retrieval and needle-in-a-haystack (single and multi-key), over context
lengths and needle depths, with a heat-map PNG per task.

Each sample is one prompt whose answer follows it (``"... The pass key is"`` -> ``" 71432"``). The prompt is
fed ``window`` tokens at a time with the model state carried (SMT/CMS memories; attention models keep their KV
cache, so they run past their trained length without truncation), and the answer is scored teacher-forced: a
sample is correct when every answer token is the greedy (argmax) choice, which is exactly when greedy decoding
would produce the answer. The answer's log-likelihood is kept too (informative when accuracy is zero).

Passkey: the filler of Mohtashami & Jaggi (2023). NIAH: RULER-style needles "The special magic number for
<key> is: <7 digits>." in a haystack of real English prose (``pydoc_data.topics``, offline); multi-key adds
distractor needles for other keys at random depths.

    python -m eval.longctx --checkpoint runs/tiny/final --tasks passkey,niah_single,niah_multi \\
        --lengths 1024,2048,4096 --depths 0,0.5,1 --samples 2 --out results/longctx
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from torch import nn

from eval.scoring import Tokenizer, add_model_args, load_model_and_tokenizer, score_requests

PASSKEY_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
KEY_WORDS = [
    "apple",
    "river",
    "violet",
    "harbor",
    "falcon",
    "copper",
    "meadow",
    "lantern",
    "glacier",
    "orchid",
    "saddle",
    "thunder",
    "velvet",
    "willow",
    "canyon",
    "ember",
]


def _haystack_text() -> str:
    from pydoc_data.topics import topics

    return " ".join(" ".join(topics[k].split()) for k in sorted(topics))


def _fill(tok: Tokenizer, text: str, n_tokens: int) -> list[int]:
    ids = tok.encode(text)
    reps = -(-n_tokens // max(len(ids), 1))
    return (ids * reps)[:n_tokens]


def _insert(hay: list[int], needle: list[int], depth: float, tok: Tokenizer) -> list[int]:
    """Insert ``needle`` at fraction ``depth`` of ``hay``, moved back to the preceding sentence end."""
    pos = int(round(depth * len(hay)))
    dot = tok.encode(". ")
    while 0 < pos < len(hay) and hay[pos - len(dot) : pos] != dot:
        pos -= 1
    return hay[:pos] + needle + hay[pos:]


def make_sample(
    task: str, tok: Tokenizer, length: int, depth: float, rng: random.Random, n_keys: int = 4
) -> tuple[list[int], list[int], str]:
    """``(prompt tokens, answer tokens, answer text)`` with the prompt about ``length`` tokens long."""
    if task == "passkey":
        key = str(rng.randint(10000, 99999))
        needles = [(depth, f"The pass key is {key}. Remember it. {key} is the pass key. ")]
        question, filler = "What is the pass key? The pass key is", PASSKEY_FILLER
    elif task in ("niah_single", "niah_multi"):
        words = rng.sample(KEY_WORDS, n_keys if task == "niah_multi" else 1)
        values = [str(rng.randint(1000000, 9999999)) for _ in words]
        needles = [(depth, f"The special magic number for {words[0]} is: {values[0]}. ")]
        needles += [
            (rng.random(), f"The special magic number for {w} is: {v}. ")
            for w, v in zip(words[1:], values[1:])
        ]
        key = values[0]
        question = (
            f"What is the special magic number for {words[0]} mentioned in the text? "
            f"The special magic number for {words[0]} is:"
        )
        filler = _haystack_text()
    else:
        raise ValueError(f"unknown task {task!r} (passkey, niah_single, niah_multi)")
    q = tok.encode(" " + question)
    needle_ids = [tok.encode(n) for _, n in needles]
    hay = _fill(tok, filler, max(length - len(q) - sum(map(len, needle_ids)), 0))
    for (d, _), ids in sorted(
        zip(needles, needle_ids), key=lambda p: -p[0][0]
    ):  # deepest first keeps positions
        hay = _insert(hay, ids, d, tok)
    return hay + q, tok.encode(" " + key), key


def run(
    model: nn.Module,
    tok: Tokenizer,
    tasks: list[str],
    lengths: list[int],
    depths: list[float],
    samples: int = 1,
    window: int = 1024,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy and mean answer log-likelihood for every (task, length, depth) cell."""
    out: dict[str, Any] = {}
    for task in tasks:
        cells = []
        for length in lengths:
            for depth in depths:
                rng = random.Random(f"{seed}-{task}-{length}-{depth}")
                reqs = [make_sample(task, tok, length, depth, rng)[:2] for _ in range(samples)]
                t0 = time.perf_counter()
                res = score_requests(model, reqs, window=window, batch_tokens=max(length, 1) * samples)
                cells.append(
                    {
                        "length": length,
                        "depth": depth,
                        "acc": sum(r[1] for r in res) / len(res),
                        "answer_ll": sum(r[0] for r in res) / len(res),
                        "seconds": time.perf_counter() - t0,
                    }
                )
        out[task] = cells
    return out


def heatmap(cells: list[dict[str, Any]], title: str, path: str | Path, ylabel: str = "needle depth",
            yfmt: str = "{:.0%}") -> None:
    """Depth (or another ``depth`` key, named by ``ylabel``) x length accuracy grid as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    lengths = sorted({c["length"] for c in cells})
    depths = sorted({c["depth"] for c in cells})
    grid = np.full((len(depths), len(lengths)), np.nan)
    for c in cells:
        grid[depths.index(c["depth"]), lengths.index(c["length"])] = c["acc"]
    fig, ax = plt.subplots(figsize=(1.2 * len(lengths) + 2, 0.6 * len(depths) + 1.5))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(lengths)), [f"{n // 1024}K" if n >= 1024 else str(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [yfmt.format(d) for d in depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(ylabel)
    for i in range(len(depths)):
        for j in range(len(lengths)):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Passkey and needle-in-a-haystack over lengths and depths.")
    p.add_argument("--checkpoint", required=True)
    add_model_args(p)
    p.add_argument("--tasks", default="passkey,niah_single,niah_multi")
    p.add_argument("--lengths", default="1024,2048,4096,8192,16384,32768,65536")
    p.add_argument("--depths", default="0,0.25,0.5,0.75,1")
    p.add_argument("--samples", type=int, default=2, help="samples per cell")
    p.add_argument("--window", type=int, default=1024, help="tokens per forward (state carried between them)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="results/longctx")
    args = p.parse_args(argv)
    cfg, model, tok = load_model_and_tokenizer(args.checkpoint, args.tokenizer, args.allow_tokenizer_mismatch,
                                               args.device)
    res = run(
        model,
        tok,
        args.tasks.split(","),
        [int(x) for x in args.lengths.split(",")],
        [float(x) for x in args.depths.split(",")],
        args.samples,
        args.window,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "longctx.json").write_text(json.dumps({"checkpoint": args.checkpoint, "results": res}, indent=2))
    for task, cells in res.items():
        heatmap(cells, f"{task} ({cfg.name})", out / f"{task}.png")
        print(task, " ".join(f"{c['length']}@{c['depth']:.2f}:{c['acc']:.2f}" for c in cells))
    print(f"wrote {out}/longctx.json and heat maps")


if __name__ == "__main__":
    main()
