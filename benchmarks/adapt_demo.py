"""Ad-hoc level stacking on CPU: pretrain a small Llama on one domain, adapt it to another, measure forgetting.

    python benchmarks/adapt_demo.py                 # a few CPU minutes; prints the README's table

1. A Llama-style model built from a config (random init, byte-level vocabulary) is pretrained on Shakespeare's
   plays (domain A, ``hope.training.shakespeare``).
2. Three copies are adapted to Python's documentation (domain B, ``pydoc_data.topics``) with the same tokens in
   the same order and the same optimizer: plain fine-tuning of every parameter, plain fine-tuning of the MLPs
   only, and ``cmsify`` (every MLP becomes CMS levels seeded from it, Behrouz et al., Nested Learning, arXiv
   2512.24695, section 7.3) with the backbone frozen (``train="cms"``).
3. Held-out bits per byte on both domains (documents never trained on, split by a hash of each document), before
   and after. The converted model at step size 0 is also scored before adaptation (it must equal the original).
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from hope.adapt import cmsify, describe, set_trainable
from hope.training.data import eval_sequences, tokenize_split
from hope.training.evaluate import evaluate
from hope.training.shakespeare import shakespeare_documents
from hope.training.tokenizer import build_tokenizer


def python_docs() -> list[str]:
    import pydoc_data.topics

    return [f"{name}\n\n{text}" for name, text in sorted(pydoc_data.topics.topics.items())]


def batches(tokens: np.ndarray, seq_len: int, batch: int, steps: int, seed: int):
    """``steps`` batches of random windows (the same for every model given the same seed)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.from_numpy(tokens.astype(np.int64))
    for _ in range(steps):
        starts = torch.randint(0, len(t) - seq_len, (batch,), generator=g)
        yield torch.stack([t[s:s + seq_len] for s in starts.tolist()])


def train(model, data, lr: float, steps: int, warmup: int = 10) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    model.train()
    t0, loss = time.perf_counter(), float("nan")
    for i, x in enumerate(data):
        scale = min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * i / steps))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        loss = model(x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss = loss.item()
    print(f"  {steps} steps in {time.perf_counter() - t0:.0f} s, last loss {loss:.3f}", flush=True)
    return loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--adapt-steps", type=int, default=60)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--adapt-lr", type=float, default=1e-3)
    p.add_argument("--levels", default="16,static")
    p.add_argument("--step-init", type=float, default=0.5, help="initial eta * C of the in-context levels")
    p.add_argument("--eval-tokens", type=int, default=16384)
    p.add_argument("--cache-dir", default="~/.cache/hope")
    args = p.parse_args()
    torch.manual_seed(0)
    tok = build_tokenizer("byte")
    a_train, a_val, a_stats = tokenize_split(iter(shakespeare_documents(args.cache_dir)), tok, 0.05)
    b_train, b_val, b_stats = tokenize_split(iter(python_docs()), tok, 0.1)
    print(f"A (Shakespeare): {a_stats}\nB (Python docs): {b_stats}")
    val = {d: eval_sequences(v, args.seq_len, args.eval_tokens) for d, v in (("A", a_val), ("B", b_val))}
    token_bytes = tok.token_bytes()

    def bpb(model) -> dict[str, float]:
        return {d: evaluate(model, s, args.batch, token_bytes, torch.device("cpu"))["bpb"] for d, s in val.items()}

    cfg = LlamaConfig(hidden_size=args.dim, intermediate_size=32 * math.ceil(8 * args.dim / 3 / 32),
                      num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4,
                      vocab_size=tok.vocab_size, max_position_embeddings=4096, bos_token_id=tok.eos_id,
                      eos_token_id=tok.eos_id, tie_word_embeddings=True, use_cache=False)
    base = AutoModelForCausalLM.from_config(cfg)
    print(f"pretraining a {sum(q.numel() for q in base.parameters()) / 1e6:.2f}M-parameter Llama on A", flush=True)
    train(base, batches(a_train, args.seq_len, args.batch, args.pretrain_steps, seed=1), args.lr,
          args.pretrain_steps)
    rows = [("pretrained on A", bpb(base))]

    adapt = lambda: batches(b_train, args.seq_len, args.batch, args.adapt_steps, seed=2)  # noqa: E731
    runs = {}
    full = copy.deepcopy(base)
    runs["plain fine-tuning, all parameters"] = full
    mlp_only = copy.deepcopy(base)
    for name, q in mlp_only.named_parameters():
        q.requires_grad_(".mlp." in name)
    runs["plain fine-tuning, MLPs only"] = mlp_only
    cms = cmsify(copy.deepcopy(base), levels=args.levels, train="cms", step_init=0.0)
    rows.append(("cmsify, step size 0 (before adapting)", bpb(cms)))
    with torch.no_grad():
        for lvl in (lv for m in cms.cms_modules() for lv in m.cms.levels if lv.chunk_size is not None):
            lvl.eta.fill_(args.step_init / lvl.chunk_size)
    rows.append((f"cmsify, step_init {args.step_init} (before adapting)", bpb(cms)))
    runs[f"cmsify levels {args.levels}, train='cms'"] = cms
    for name, model in runs.items():
        counts = set_trainable(model, "cms") if model is cms else None
        n = sum(q.numel() for q in model.parameters() if q.requires_grad)
        print(f"adapting on B: {name} ({describe(counts, 'cms') if counts else f'{n / 1e6:.3f}M trainable'})",
              flush=True)
        train(model, adapt(), args.adapt_lr, args.adapt_steps)
        rows.append((f"{name}, after adapting on B", bpb(model)))
    levels = [lv for m in cms.cms_modules() for lv in m.cms.levels if lv.chunk_size is not None]
    steps = [round(lv.eta.item() * lv.chunk_size, 4) for lv in levels]
    print(f"in-context levels' eta * C after adapting: {steps} (initial {args.step_init})")
    with torch.no_grad():  # the adapted CMS model with its in-context steps switched off: what they contribute
        for lv in levels:
            lv.eta.zero_()
    rows.append(("cmsify after adapting, in-context steps set to 0 (ablation)", bpb(cms)))
    tokens = args.adapt_steps * args.batch * args.seq_len
    print(f"\nheld-out bits per byte (A: {val['A'].numel()} tokens of Shakespeare, B: {val['B'].numel()} tokens of "
          f"Python docs; adaptation: {tokens} tokens of B, the same for every run)\n")
    print("| model | A: Shakespeare | B: Python docs |\n|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['A']:.3f} | {r['B']:.3f} |")


if __name__ == "__main__":
    main()
