"""Pretrain a HOPE, Titans or Transformer++ language model on real text.

    python train.py --config configs/tiny.yaml                       # tiny HOPE on Shakespeare, CPU
    python train.py --config configs/transformer-tiny.yaml           # the matched Transformer++
    python train.py --config configs/tiny.yaml --set max_steps=50 --set model.n_layers=2
    python train.py --set init_from=DIR --set tokenizer=DIR   # continual pretraining of a hope.adapt conversion
    torchrun --nproc_per_node=8 train.py --config configs/hope-340m.yaml   # FSDP2 (or --set parallel=ddp)

The run directory (``out_dir``, default ``runs/<config name>``) receives ``metrics.jsonl``,
``loss.png`` and ``checkpoints/step_*`` (see hope/training/checkpoint.py); a run resumes from its latest
checkpoint unless ``--set resume=none``. Reusable parts live in ``hope/training``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import time
from pathlib import Path

import torch

from hope.model import HopeLM
from hope.training.checkpoint import list_checkpoints, load_checkpoint, resolve_checkpoint, save_checkpoint
from hope.training.collector import GarbageCollection
from hope.training.config import build_model_config, load_run_config
from hope.training.data import build_loaders, eval_sequences, micro_batches
from hope.training.evaluate import evaluate
from hope.training.guard import NonFiniteGuard, NonFiniteLossError
from hope.training.logging import RunLogger, plot_loss_curve
from hope.training.optimizer import build_optimizer, set_lr
from hope.training.parallel import (
    all_reduce,
    clip_grad_norm,
    destroy_distributed,
    grad_sync,
    init_distributed,
    parallelize,
    rank_zero_first,
    resolve_mode,
    sync_replicated_grads,
)
from hope.training.tokenizer import build_tokenizer


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="run YAML with model: and train: sections (configs/*.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a train field (lr=1e-3) or a model field (model.dim=64); repeatable")
    args = parser.parse_args(argv)

    # -------------------------------------------------------------------- configuration
    model_section, cfg = load_run_config(args.config, args.set)
    run_name = Path(args.config).stem if args.config else "run"
    out_dir = Path(cfg.out_dir or f"runs/{run_name}")
    info = init_distributed(cfg.device)
    mode = resolve_mode(cfg.parallel, info.world)
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    tokenizer = build_tokenizer(cfg.tokenizer)
    model_cfg = build_model_config(model_section, tokenizer.vocab_size)  # vocabulary follows the tokenizer
    is_cuda = info.device.type == "cuda"
    use_bf16 = cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and is_cuda)
    autocast = torch.autocast(info.device.type, torch.bfloat16) if use_bf16 else contextlib.nullcontext()

    # batch geometry: micro-batches of batch_size sequences per process, accumulated to ~batch_tokens
    micro_tokens = cfg.batch_size * cfg.seq_len * info.world
    accum = max(1, round(cfg.batch_tokens / micro_tokens)) if cfg.batch_tokens else 1
    global_batch = cfg.batch_size * info.world * accum
    tokens_per_step = global_batch * cfg.seq_len

    # -------------------------------------------------------------------- data
    with rank_zero_first(info):
        loader, val_tokens, corpus = build_loaders(cfg, tokenizer, global_batch)
    val_seqs = eval_sequences(val_tokens, cfg.seq_len, cfg.val_tokens, info.rank, info.world) \
        if cfg.val_fraction > 0 else None
    token_bytes = tokenizer.token_bytes()

    # -------------------------------------------------------------------- model and optimizer
    if cfg.init_from:  # continual pretraining of a transformers model converted by hope.adapt (cmsify)
        from hope.adapt.training import generate as adapted_generate
        from hope.adapt.training import load_init_from

        model, model_cfg = load_init_from(cfg.init_from, tokenizer.vocab_size, info.device)
        generate = functools.partial(adapted_generate, model)
    else:
        model = HopeLM(model_cfg).to(info.device)
        generate = model.generate
    n_params = model.num_params()
    loss_fn = parallelize(model, mode, info, compile=cfg.compile,
                          activation_checkpointing=cfg.activation_checkpointing)
    optimizer = build_optimizer(model, cfg)
    guard = NonFiniteGuard(cfg.max_bad_steps)
    train_dict = cfg.to_dict()

    # -------------------------------------------------------------------- resume
    ckpt_root = out_dir / "checkpoints"
    step, tokens_seen, resumed_from = 0, 0, None
    if cfg.resume != "none" and (cfg.resume != "auto" or list_checkpoints(ckpt_root)):
        resumed_from = resolve_checkpoint(ckpt_root if cfg.resume == "auto" else cfg.resume)
        state, changed = load_checkpoint(resumed_from, model, optimizer, model_cfg, train_dict,
                                         sharded=mode == "fsdp", rank=info.rank, device=info.device)
        step, tokens_seen = state["step"], state["tokens"]
        loader.load_state_dict(state["data"])
        guard.load_state_dict(state["guard"])

    log = RunLogger(out_dir, cfg.max_steps, step, enabled=info.is_main, progress=cfg.progress,
                    wandb_project=cfg.wandb_project, wandb_mode=cfg.wandb_mode,
                    run_config={"model": model_cfg.to_dict(), "train": train_dict})
    log.print(f"{model_cfg.name}: {n_params / 1e6:.2f}M parameters, vocab {model_cfg.vocab_size} "
              f"({tokenizer.name}), {mode} on {info.world} x {info.device}, "
              f"{'bf16 autocast' if use_bf16 else 'fp32'}")
    log.print(f"data {cfg.data}: {json.dumps(corpus)}")
    log.print(f"batch: {global_batch} x {cfg.seq_len} tokens = {tokens_per_step} per step "
              f"({accum} accumulation step(s)), {cfg.max_steps} steps")
    if resumed_from is not None:
        log.print(f"resumed from {resumed_from} at step {step}" +
                  (f" (changed settings: {', '.join(changed)})" if changed else ""))
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        run_config = {"model": model_cfg.to_dict(), "train": train_dict}
        (out_dir / "run_config.json").write_text(json.dumps(run_config, indent=2))

    def checkpoint() -> Path:
        state = {"tokens": tokens_seen, "data": loader.state_dict(), "guard": guard.state_dict(),
                 "world_size": info.world, "parallel": mode}
        return save_checkpoint(ckpt_root, step, model, optimizer, model_cfg, train_dict, state,
                               sharded=mode == "fsdp", rank=info.rank, keep_last=cfg.keep_last,
                               tokenizer=tokenizer)

    def run_eval() -> dict[str, float]:
        return evaluate(model, val_seqs, cfg.batch_size, token_bytes, info.device, autocast)

    # -------------------------------------------------------------------- training loop
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    collector = GarbageCollection(cfg.gc_every)
    t_last = time.perf_counter()
    try:
        while step < cfg.max_steps:
            n = step + 1  # the step being computed, as logged
            lr_scale = set_lr(optimizer, step, cfg)
            loss_sum = torch.zeros((), device=info.device)
            parts = micro_batches(loader.next_batch(), info.rank, info.world, cfg.batch_size)
            for i, x in enumerate(parts):
                x = x.to(info.device, non_blocking=True)
                with grad_sync(loss_fn, mode, sync=i == len(parts) - 1), autocast:
                    loss = loss_fn(x) / len(parts)
                    if n in cfg.debug_nan_steps:
                        loss = loss * float("nan")
                loss.backward()
                loss_sum += loss.detach()
            sync_replicated_grads(model, mode)
            loss_val = all_reduce(loss_sum, "mean").item()
            grad_norm = clip_grad_norm(params, cfg.grad_clip).item()
            good = guard.check(loss_val, grad_norm)
            if good:
                optimizer.step()
            else:
                log.print(f"step {n}: non-finite loss {loss_val} / grad norm {grad_norm}: step skipped "
                          f"({guard.bad_in_a_row} in a row, abort at {cfg.max_bad_steps})")
            optimizer.zero_grad(set_to_none=True)
            step, tokens_seen = n, tokens_seen + tokens_per_step
            collector.step(step)

            now = time.perf_counter()
            metrics = {"loss": loss_val, "grad_norm": grad_norm, "lr": cfg.lr * lr_scale,
                       "tokens": tokens_seen, "tok_s": tokens_per_step / max(now - t_last, 1e-9)}
            t_last = now
            if val_seqs is not None and cfg.eval_every and step % cfg.eval_every == 0 \
                    and step < cfg.max_steps:  # the end of training is evaluated below
                ev = run_eval()
                metrics.update(val_loss=ev["loss"], val_bpb=ev["bpb"])
                t_last = time.perf_counter()
            log.log(step, metrics)
            guard.abort_if_exhausted(step)
            if not cfg.progress and (step % cfg.log_every == 0 or step == 1):
                log.print(f"step {step}/{cfg.max_steps} loss {loss_val:.4f} lr {metrics['lr']:.2e} "
                          f"{metrics['tok_s']:.0f} tok/s" +
                          (f" val_bpb {metrics['val_bpb']:.4f}" if "val_bpb" in metrics else ""))
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.max_steps:
                if good:  # never replace a good checkpoint while losses are non-finite
                    checkpoint()
                t_last = time.perf_counter()
    except NonFiniteLossError as e:
        last = list_checkpoints(ckpt_root)
        log.print(f"{e}\nthe last good checkpoint is {last[-1] if last else '(none written yet)'}")
        log.close()
        destroy_distributed()
        raise SystemExit(3) from None
    finally:
        collector.close()

    # -------------------------------------------------------------------- end of training
    final = checkpoint()
    result = {"step": step, "tokens": tokens_seen, "checkpoint": str(final)}
    if val_seqs is not None:
        ev = run_eval()
        result.update(val_loss=ev["loss"], val_bpb=ev["bpb"], val_tokens=ev["tokens"])
        log.log(step, {"tokens": tokens_seen, "val_loss": ev["loss"], "val_bpb": ev["bpb"]}, bar=False)
        log.print(f"held-out: loss {ev['loss']:.4f} nats/token, {ev['bpb']:.4f} bits per byte "
                  f"({int(ev['tokens'])} tokens)")
    if cfg.sample_tokens:
        prompt = [tokenizer.eos_id, *tokenizer.encode(cfg.sample_prompt)]
        g = torch.Generator(device=info.device).manual_seed(cfg.seed)
        model.eval()
        with autocast:
            new = generate(torch.tensor([prompt], device=info.device), max_new_tokens=cfg.sample_tokens,
                           temperature=cfg.sample_temperature, top_k=cfg.sample_top_k or None, generator=g)
        sample = cfg.sample_prompt + tokenizer.decode(new[0].tolist())
        result["sample"] = sample
        log.print(f"sample ({cfg.sample_tokens} tokens, temperature {cfg.sample_temperature}):\n{sample}")
    if info.is_main:
        png = plot_loss_curve(log.path, out_dir / "loss.png", title=f"{model_cfg.name} on {cfg.data}")
        log.print(f"checkpoint: {final}" + (f"\nloss curve: {png}" if png else ""))
        (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    log.close()
    destroy_distributed()
    return result


if __name__ == "__main__":
    main()
