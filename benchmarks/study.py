"""The evidence study (docs/results.md): does HOPE do what the paper claims, at the scale this machine affords?

    python benchmarks/study.py --profile full --out runs/study --jobs 2   # every run (resumes: finished runs are kept)
    python benchmarks/study.py --report runs/study --docs docs           # regenerate docs/results.md and its PNGs
    python benchmarks/study.py --profile quick --out /tmp/study --docs /tmp/study/docs   # minutes: the test's profile

Phases, each a list of independent runs (``train.py``, ``eval.mqar``, ``eval.longctx``, ``eval.position_loss`` as
subprocesses with one thread each, ``--jobs`` at a time), raw results under ``--out``:

1. ``lm``: the four tiny families (parameter-matched presets) on Shakespeare, every seed, at equal tokens;
2. ``ablate``: the paper's Table 6 rows and this code's own modelling choices, as config flags of tiny HOPE;
3. ``matched``: the other three families again at HOPE's measured wall-clock and at its training FLOPs
   (``hope.flops``, inner loops included), from phase 1's numbers;
4. ``recall``: MQAR (Arora et al., 2023) trained from scratch per family over lengths x pairs, its easiest cell
   again at a longer budget with every seed, and passkey retrieval at 1K-16K tokens on phase 1's seed-0
   checkpoints;
5. ``position``: held-out loss by position in long documents (the paper's Fig. 10 claim) on the same checkpoints.

The report (``study_report.py``) only reads the raw results, so it can be regenerated without rerunning.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hope.config import HopeConfig  # noqa: E402
from hope.flops import total_flops_per_token  # noqa: E402

FAMILIES = {"HOPE": "tiny", "Titans": "titans-tiny", "Hope-Attention": "hope-attention-tiny",
            "Transformer++": "transformer-tiny"}
ABLATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    # name: (what it tests, model overrides of tiny HOPE); the CMS variants keep the summed hidden width (768)
    "w/o CMS (static levels)": ("paper Table 6: CMS", {"cms_chunk_sizes": [None, None, None]}),
    "DGD -> plain GD": ("paper Table 6: DGD (eta_init 0.01: plain GD diverges at the preset's 0.3)",
                        {"dgd": False, "eta_init": 0.01}),
    "w/o momentum": ("paper Table 6: momentum", {"momentum": False}),
    "w/o self-modification": ("paper Table 6: self-modification, i.e. w/o the inner projections of k and v "
                              "(static k, v; target v)", {"mixer": "titans"}),
    "1 in-context CMS level": ("paper Table 6: CMS levels", {"cms_chunk_sizes": [32, None], "cms_hidden": 384}),
    "3 in-context CMS levels": ("paper Table 6: CMS levels",
                                {"cms_chunk_sizes": [16, 32, 128, None], "cms_hidden": 192}),
    "first-order CMS outer gradient": ("this code: exact second-order outer gradient", {"cms_first_order": True}),
    "undamped hidden-layer DGD step": ("this code: the hidden layer's DGD target damped by the curvature of the "
                                       "layer above", {"dgd_damping": False}),
    "velocity without retention decay": ("this code: the momentum velocity collects the retention decay too "
                                         "(ablation: the steps only, Titans Eq. 9-10)", {"velocity_decay": False}),
    "raw self-generated targets": ("this code: unit-norm self-generated targets L2norm(M_0(v))",
                                   {"unit_targets": False}),
    "raw self-generated targets, eta_init 0.05": ("the same at a 6x smaller inner step",
                                                  {"unit_targets": False, "eta_init": 0.05}),
    "raw CMS keys and values": ("this code: unit-norm keys and values in the CMS objective", {"cms_unit_kv": False}),
    "raw CMS keys and values, cms_step_init 0.001": ("the same at a 100x smaller CMS step",
                                                     {"cms_unit_kv": False, "cms_step_init": 0.001}),
}


@dataclasses.dataclass(frozen=True)
class Profile:
    steps: int
    lr: float  # peak lr of every model (one value for all: no per-model tuning at this budget)
    batch: int
    seq_len: int
    seeds: int
    val_tokens: int
    model: dict  # overrides applied to every model (the quick profile's micro width)
    mqar_steps: int
    mqar_batch: int
    mqar_lengths: str
    mqar_pairs: str
    mqar_long: tuple[int, int, int]  # MQAR's easiest cell at a longer budget, every seed: (steps, seq_len, pairs)
    passkey_lengths: str
    position_len: int
    position_bucket: int


PROFILES = {
    "quick": Profile(steps=3, lr=4e-4, batch=2, seq_len=64, seeds=2, val_tokens=1024, model={"dim": 32, "n_layers": 1},
                     mqar_steps=2, mqar_batch=4, mqar_lengths="32,64", mqar_pairs="2,4", mqar_long=(3, 32, 2),
                     passkey_lengths="128,256",
                     position_len=256, position_bucket=64),
    "full": Profile(steps=80, lr=2e-3, batch=4, seq_len=256, seeds=3, val_tokens=16384, model={}, mqar_steps=200,
                    mqar_batch=16, mqar_lengths="64,128,256,512", mqar_pairs="4,8,16",
                    mqar_long=(1000, 64, 4),
                    passkey_lengths="1024,2048,4096,8192,16384",
                    position_len=4096, position_bucket=256),
}


def model_config(preset: str, prof: Profile, overrides: dict[str, Any]) -> HopeConfig:
    """The config a run trains (the profile's overrides, then the run's)."""
    return HopeConfig.from_name(preset, **{**prof.model, **overrides})


def flops_per_token(cfg: HopeConfig, seq_len: int) -> float:
    """Training matmul FLOPs per token (forward + backward, inner loops included; attention over causal pairs)."""
    return total_flops_per_token(cfg, seq_len, causal=True).total


def _set(key: str, value: Any) -> list[str]:
    return ["--set", f"{key}={json.dumps(value) if isinstance(value, (list, bool)) or value is None else value}"]


def train_command(preset: str, prof: Profile, overrides: dict[str, Any], steps: int, seed: int,
                  out: Path) -> list[str]:
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / f"{preset}.yaml")]
    train = dict(out_dir=str(out), max_steps=steps, lr=prof.lr, warmup_steps=max(1, steps // 8), batch_size=prof.batch,
                 seq_len=prof.seq_len, val_tokens=prof.val_tokens, seed=seed, ckpt_every=0, keep_last=1,
                 sample_tokens=0, progress=False, log_every=max(1, steps // 8), resume="none")
    for k, v in train.items():
        cmd += _set(k, v)
    for k, v in {**prof.model, **overrides}.items():
        cmd += _set(f"model.{k}", v)
    return cmd


DIVERGED = re.compile(r"step (\d+): \d+ non-finite losses in a row; aborting")  # train.py's abort line


@dataclasses.dataclass
class Job:
    """One subprocess; done when ``marker`` exists (so a stopped study resumes where it was).

    ``diverged``: for runs whose divergence is a result (the ablations): a training run that train.py aborts on
    non-finite losses writes this file (the step it stopped at) instead of failing the study."""

    name: str
    cmd: list[str]
    marker: Path
    log: Path
    meta: dict = dataclasses.field(default_factory=dict)
    diverged: Path | None = None

    @property
    def done(self) -> bool:
        return self.marker.exists() or (self.diverged is not None and self.diverged.exists())

    def record_divergence(self) -> int | None:
        """The step train.py aborted at, recorded in ``diverged``; None when the log shows no divergence."""
        m = DIVERGED.search(self.log.read_text()) if self.diverged is not None else None
        if m is None:
            return None
        self.diverged.write_text(json.dumps({"step": int(m.group(1)), **self.meta}, indent=2))
        return int(m.group(1))


def run_jobs(jobs: list[Job], n_parallel: int) -> None:
    todo = [j for j in jobs if not j.done]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} runs already done; running {len(todo)}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}

    def one(job: Job) -> None:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        (job.log.parent / "meta.json").write_text(json.dumps({**job.meta, "cmd": job.cmd}, indent=2))
        t = time.perf_counter()
        with open(job.log, "w") as f:
            rc = subprocess.run(job.cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
        status = "ok" if rc == 0 and job.marker.exists() else f"FAILED (rc {rc}, see {job.log})"
        if status != "ok" and (step := job.record_divergence()) is not None:
            status = f"diverged (non-finite losses, stopped at step {step})"
        print(f"  {job.name}: {status}, {time.perf_counter() - t:.0f} s", flush=True)
        if status.startswith("FAILED"):
            raise RuntimeError(f"{job.name} failed; log: {job.log}")

    with concurrent.futures.ThreadPoolExecutor(n_parallel) as pool:
        for fut in [pool.submit(one, j) for j in todo]:
            fut.result()


def run_dir(out: Path, phase: str, label: str, seed: int) -> Path:
    """Where one training run of the study lives."""
    return out / phase / label.replace("/", "_").replace(" ", "_").replace(">", "") / f"seed{seed}"


def num_params(cfg: HopeConfig) -> int:
    import torch

    from hope.model import HopeLM

    with torch.device("meta"):
        return HopeLM(cfg).num_params()


def lm_job(out: Path, phase: str, label: str, preset: str, prof: Profile, overrides: dict[str, Any],
           steps: int, seed: int, budget: str, may_diverge: bool = False) -> Job:
    d = run_dir(out, phase, label, seed)
    cfg = model_config(preset, prof, overrides)
    meta = {"phase": phase, "label": label, "preset": preset, "overrides": overrides, "seed": seed,
            "steps": steps, "budget": budget, "tokens": steps * prof.batch * prof.seq_len,
            "flops_per_token": flops_per_token(cfg, prof.seq_len), "params": num_params(cfg)}
    return Job(f"{phase}/{label}/seed{seed}", train_command(preset, prof, overrides, steps, seed, d),
               d / "result.json", d / "train.log", meta, d / "diverged.json" if may_diverge else None)


def unigram_baseline(out: Path, prof: Profile) -> dict[str, float]:
    """Held-out bits per byte of the training split's byte frequencies (add-one smoothed), on exactly the held-out
    sequences train.py scores: the bar a model must clear to have learnt more than unigram statistics."""
    import math

    import numpy as np
    import torch

    from hope.training.config import load_run_config
    from hope.training.data import eval_sequences, load_corpus
    from hope.training.tokenizer import build_tokenizer

    _, cfg = load_run_config(ROOT / "configs" / "tiny.yaml", [f"seq_len={prof.seq_len}",
                                                               f"val_tokens={prof.val_tokens}"])
    tok = build_tokenizer(cfg.tokenizer)
    train, val, _ = load_corpus(cfg, tok)
    x = eval_sequences(val, cfg.seq_len, cfg.val_tokens)[:, 1:].flatten()
    counts = np.bincount(np.asarray(train, dtype=np.int64), minlength=tok.vocab_size) + 1.0
    nats = -torch.from_numpy(np.log(counts / counts.sum()))[x]
    nbytes = tok.token_bytes()[x]
    res = {"val_bpb": float((nats * (nbytes > 0)).sum() / nbytes.sum() / math.log(2)), "tokens": int(x.numel())}
    (out / "unigram.json").write_text(json.dumps(res, indent=2))
    return res


def phase_lm(out: Path, prof: Profile) -> list[Job]:
    unigram_baseline(out, prof)
    return [lm_job(out, "lm", fam, preset, prof, {}, prof.steps, s, "equal tokens")
            for fam, preset in FAMILIES.items() for s in range(prof.seeds)]


def phase_ablate(out: Path, prof: Profile) -> list[Job]:
    return [lm_job(out, "ablate", name, "tiny", prof, over, prof.steps, s, "equal tokens", may_diverge=True)
            for name, (_, over) in ABLATIONS.items() for s in range(prof.seeds)]


def training_curve(run_dir: Path) -> list[tuple[int, float, float]]:
    """``(tokens, training seconds, loss)`` per logged step, from metrics.jsonl (seconds from its per-step
    tokens/s, so evaluation time is excluded)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    curve, secs, prev = [], 0.0, 0
    for r in rows:
        if "tok_s" in r:
            secs += (r["tokens"] - prev) / r["tok_s"]
            prev = r["tokens"]
            curve.append((r["tokens"], secs, r["loss"]))
    return curve


def train_seconds(run_dir: Path) -> float:
    return training_curve(run_dir)[-1][1]


def phase_matched(out: Path, prof: Profile) -> list[Job]:
    """The other families at HOPE's wall-clock (mean over its seeds) and at its training FLOPs."""
    def mean_seconds(fam: str) -> float:
        return statistics.mean(train_seconds(run_dir(out, "lm", fam, s)) for s in range(prof.seeds))

    hope_cfg = model_config(FAMILIES["HOPE"], prof, {})
    hope_s, hope_f = mean_seconds("HOPE"), flops_per_token(hope_cfg, prof.seq_len)
    jobs = []
    for fam, preset in FAMILIES.items():
        if fam == "HOPE":
            continue
        secs_per_step = mean_seconds(fam) / prof.steps
        f = flops_per_token(model_config(preset, prof, {}), prof.seq_len)
        budgets = {"equal wall-clock": round(hope_s / secs_per_step), "equal FLOPs": round(prof.steps * hope_f / f)}
        for budget, steps in budgets.items():
            for s in range(prof.seeds):
                jobs.append(lm_job(out, "matched", f"{fam} {budget}", preset, prof, {}, max(steps, 1), s, budget))
    return jobs


def checkpoint_of(out: Path, fam: str) -> Path:
    return Path(json.loads((run_dir(out, "lm", fam, 0) / "result.json").read_text())["checkpoint"])


def mqar_command(preset: str, prof: Profile, steps: int, lengths: str, pairs: str, out: Path,
                 seed: int | None = None) -> list[str]:
    """An ``eval.mqar`` run of ``preset`` (the profile's batch and model overrides)."""
    cmd = [sys.executable, "-m", "eval.mqar", "--preset", preset, "--steps", str(steps), "--batch",
           str(prof.mqar_batch), "--lengths", lengths, "--pairs", pairs, "--out", str(out)]
    cmd += [] if seed is None else ["--seed", str(seed)]
    for k, v in prof.model.items():
        cmd += _set(k, v)
    return cmd


def phase_recall(out: Path, prof: Profile) -> list[Job]:
    jobs = []
    for fam, preset in FAMILIES.items():
        d = out / "mqar" / fam
        cmd = mqar_command(preset, prof, prof.mqar_steps, prof.mqar_lengths, prof.mqar_pairs, d)
        jobs.append(Job(f"mqar/{fam}", cmd, d / "mqar.json", d / "mqar.log", {"family": fam, "preset": preset}))
        jobs += mqar_long_jobs(out, prof, fam, preset)
        d = out / "passkey" / fam
        cmd = [sys.executable, "-m", "eval.longctx", "--checkpoint", str(checkpoint_of(out, fam)), "--tasks",
               "passkey", "--lengths", prof.passkey_lengths, "--depths", "0,0.5,1", "--samples", "2",
               "--out", str(d)]
        jobs.append(Job(f"passkey/{fam}", cmd, d / "longctx.json", d / "longctx.log", {"family": fam}))
    return jobs


def mqar_long_jobs(out: Path, prof: Profile, fam: str, preset: str) -> list[Job]:
    """MQAR's easiest cell (shortest sequences, fewest pairs) trained ``mqar_long[0]`` steps, once per seed: is a
    family at chance for lack of budget, or at all?"""
    steps, seq_len, pairs = prof.mqar_long
    jobs = []
    for s in range(prof.seeds):
        d = out / "mqar_long" / fam / f"seed{s}"
        cmd = mqar_command(preset, prof, steps, str(seq_len), str(pairs), d, seed=s)
        jobs.append(Job(f"mqar_long/{fam}/seed{s}", cmd, d / "mqar.json", d / "mqar.log",
                        {"family": fam, "preset": preset, "seed": s}))
    return jobs


def phase_position(out: Path, prof: Profile) -> list[Job]:
    d = out / "position"
    cmd = [sys.executable, "-m", "eval.position_loss", "--seq-len", str(prof.position_len), "--bucket",
           str(prof.position_bucket), "--out", str(d)]
    for fam in FAMILIES:
        cmd += ["--checkpoint", str(checkpoint_of(out, fam)), "--label", fam]
    return [Job("position", cmd, d / "position_loss.json", d / "position_loss.log", {})]


PHASES = {"lm": phase_lm, "ablate": phase_ablate, "matched": phase_matched, "recall": phase_recall,
          "position": phase_position}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=tuple(PROFILES), default="full")
    p.add_argument("--out", help="run folder (raw results); the study resumes in it")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    p.add_argument("--report", metavar="RUN_DIR", help="only regenerate the report from RUN_DIR's raw results")
    p.add_argument("--docs", default=str(ROOT / "docs"), help="where results.md and its PNGs go")
    args = p.parse_args(argv)
    from study_report import write_report  # noqa: PLC0415  (benchmarks/ is on the path of this script)

    if args.report:
        print(write_report(Path(args.report), Path(args.docs)))
        return
    if not args.out:
        p.error("--out is required unless --report is given")
    phases = args.phases.split(",")
    for name in phases:
        if name not in PHASES:
            p.error(f"unknown phase {name!r}; phases: {', '.join(PHASES)}")
    out, prof = Path(args.out), PROFILES[args.profile]
    out.mkdir(parents=True, exist_ok=True)
    record = out / "study.json"
    # through JSON, as the record is read back (tuples become lists)
    study = json.loads(json.dumps({"profile": args.profile, **dataclasses.asdict(prof), "families": FAMILIES,
                                   "commands": []}))
    if record.exists():
        old = json.loads(record.read_text())
        if {k: v for k, v in old.items() if k != "commands"} != {k: v for k, v in study.items() if k != "commands"}:
            p.error(f"{out} holds a study of another profile or version ({record}); use a new --out")
        study = old
    study["commands"].append(" ".join(["python", "benchmarks/study.py", *(argv if argv is not None else sys.argv[1:])]))
    record.write_text(json.dumps(study, indent=2))
    t0 = time.perf_counter()
    for name in phases:
        print(f"== phase {name}", flush=True)
        run_jobs(PHASES[name](out, prof), args.jobs)
    print(f"study done in {time.perf_counter() - t0:.0f} s")
    print(write_report(out, Path(args.docs)))


if __name__ == "__main__":
    main()
