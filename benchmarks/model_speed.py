"""CPU speed of the model, as ratios measured in one run (DESIGN.md section 5).

1. chunk vs naive backend: one forward+backward of tiny HOPE at T (default 2048).
2. training tokens/s (forward, backward, AdamW step) of tiny HOPE vs transformer-tiny at several T.
3. generation: ms per new token and recurrent-state bytes after contexts of 1K..NK tokens.

    python benchmarks/model_speed.py [--seq-len 2048] [--skip-naive] [--batches 2 4] [--train-seq-lens 512 2048 8192]
                                     [--contexts 1024 4096 16384 65536] [--steps 9]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from train_speed import step_seconds  # benchmarks/ is on sys.path when run as a script

from hope import HopeConfig, HopeLM


def state_bytes(state) -> int:
    """Bytes of every tensor reachable from a model state (dataclasses, lists, tuples)."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, list | tuple):
        return sum(state_bytes(s) for s in state)
    if hasattr(state, "__dataclass_fields__"):
        return sum(state_bytes(getattr(state, f)) for f in state.__dataclass_fields__)
    return 0


def fwd_bwd_seconds(model: HopeLM, x: torch.Tensor) -> float:
    t = time.perf_counter()
    model(x, labels=x).loss.backward()
    return time.perf_counter() - t


def training_step_seconds(names: list[str], seq_len: int, batch: int, steps: int) -> list[list[float]]:
    """Seconds of each training step (forward, backward, AdamW) of each preset on random tokens, with the
    models' steps interleaved (:func:`train_speed.step_seconds`)."""
    runs = []
    for name in names:
        torch.manual_seed(0)
        model = HopeLM(HopeConfig.from_name(name, backend="chunk"))
        x = torch.randint(0, model.config.vocab_size, (batch, seq_len))
        runs.append((model, torch.optim.AdamW(model.parameters(), lr=4e-4), lambda x=x: x))
    return step_seconds(runs, steps)


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """Lower quartile, median and upper quartile."""
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2]


@torch.no_grad()
def generation(name: str, context: int, new_tokens: int = 16) -> tuple[float, int]:
    torch.manual_seed(0)
    model = HopeLM(HopeConfig.from_name(name, backend="chunk", max_seq_len=max(context + 64, 1024))).eval()
    prompt = torch.randint(0, model.config.vocab_size, (1, context))
    state = model(prompt).state
    tok = prompt[:, -1:]
    t = time.perf_counter()
    for _ in range(new_tokens):
        out = model(tok, state=state)
        state, tok = out.state, out.logits[:, -1:].argmax(-1)
    return 1000 * (time.perf_counter() - t) / new_tokens, state_bytes(state)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--train-seq-lens", type=int, nargs="+", default=[512, 2048, 8192])
    p.add_argument("--batches", type=int, nargs="+", default=[2, 4], help="training batch sizes")
    p.add_argument("--steps", type=int, default=9, help="timed training steps per model (median)")
    p.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    p.add_argument("--skip-naive", action="store_true", help="skip the (slow) naive backend timing")
    args = p.parse_args()
    if args.steps < 2:
        p.error(f"--steps {args.steps}: at least 2 steps are needed for the quartiles of the ratio")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")

    if not args.skip_naive:
        torch.manual_seed(0)
        chunk = HopeLM(HopeConfig.from_name("tiny", backend="chunk"))
        naive = HopeLM(HopeConfig.from_name("tiny", backend="naive"))
        naive.load_state_dict(chunk.state_dict())
        x = torch.randint(0, 256, (1, args.seq_len))
        fwd_bwd_seconds(chunk, x[:, :256])
        t_chunk = min(fwd_bwd_seconds(chunk, x) for _ in range(2))
        t_naive = fwd_bwd_seconds(naive, x)
        print(f"\n## tiny HOPE forward+backward, B=1, T={args.seq_len}")
        print("| backend | seconds | speedup |\n|---|---|---|")
        print(f"| naive | {t_naive:.2f} | 1.0x |\n| chunk | {t_chunk:.2f} | {t_naive / t_chunk:.1f}x |")

    print(f"\n## training tokens/s (forward+backward+AdamW), median of {args.steps} interleaved steps; the ratio is "
          "the median (and quartiles) over steps of HOPE's speed relative to the Transformer++ step next to it")
    print("| batch | T | tiny (HOPE) | transformer-tiny | ratio HOPE / Transformer++ | quartiles |")
    print("|---|---|---|---|---|---|")
    for batch in args.batches:
        for T in args.train_seq_lens:
            t_hope, t_tfm = training_step_seconds(["tiny", "transformer-tiny"], T, batch, args.steps)
            hope, tfm = batch * T / statistics.median(t_hope), batch * T / statistics.median(t_tfm)
            lo, mid, hi = quartiles([b / a for a, b in zip(t_hope, t_tfm)])
            print(f"| {batch} | {T} | {hope:.0f} | {tfm:.0f} | {mid:.2f} | {lo:.2f}-{hi:.2f} |", flush=True)

    print("\n## generation after a context of L tokens (B=1): ms per new token, state bytes")
    print("| L | HOPE ms/token | HOPE state | Transformer++ ms/token | Transformer++ state (KV cache) |")
    print("|---|---|---|---|---|")
    for L in args.contexts:
        h_ms, h_b = generation("tiny", L)
        t_ms, t_b = generation("transformer-tiny", L)
        print(f"| {L} | {h_ms:.1f} | {h_b / 2**20:.2f} MiB | {t_ms:.1f} | {t_b / 2**20:.2f} MiB |")


if __name__ == "__main__":
    main()
