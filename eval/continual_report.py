"""``report.md`` (mean +- std over seeds per model and method) and PNG heat maps / forgetting curves for
``eval.continual``'s runs; ``python -m eval.continual_report DIR... --out DIR`` merges result folders."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from hope.continual.metrics import METRIC_NAMES

SHORT = {"average_accuracy": "ACC", "average_incremental_accuracy": "AIA", "bwt": "BWT", "fwt": "FWT",
         "forgetting": "FM", "learning_accuracy": "LA", "intransigence": "Intr.", "retention_bpb": "dBPB(gen)"}


def mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def groups(runs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        if "skipped" not in r:
            out.setdefault((r["model"], r["method"]), []).append(r)
    return out


def table(runs: list[dict], key: str = "metrics") -> list[str]:
    lines = ["| model | method | seeds | " + " | ".join(SHORT[m] for m in METRIC_NAMES) + " | s / run |",
             "|---" * (len(METRIC_NAMES) + 4) + "|"]
    for (model, method), rs in groups(runs).items():
        cells = []
        for m in METRIC_NAMES:
            vals = [r[key][m] for r in rs if r.get(key) and r[key][m] is not None]
            if not vals:
                cells.append("-")
                continue
            mu, sd = mean_std(vals)
            cells.append(f"{mu:.3f} +- {sd:.3f}")
        secs = mean_std([r["seconds"] for r in rs])[0]
        lines.append(f"| {model} | {method} | {len(rs)} | " + " | ".join(cells) + f" | {secs:.0f} |")
    return lines


def mean_matrix(rs: list[dict], key: str) -> list[list[float]]:
    T = len(rs[0]["matrices"][key])
    return [[sum(r["matrices"][key][i][j] for r in rs) / len(rs) for j in range(T)] for i in range(T)]


def write_plots(out: Path, runs: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    g = groups(runs)
    for model in dict.fromkeys(m for m, _ in g):
        items = [(meth, rs) for (m, meth), rs in g.items() if m == model]
        key = {"class": "acc_seen", "exact": "acc", "bpb": "bpb"}[items[0][1][0]["kind"]]
        n = len(items)
        fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False)
        fig2, axes2 = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False, sharey=True)
        for ax, ax2, (meth, rs) in zip(axes[0], axes2[0], items):
            M = mean_matrix(rs, key)
            im = ax.imshow(M, cmap="viridis" if key != "bpb" else "viridis_r", vmin=0 if key != "bpb" else None,
                           vmax=1 if key != "bpb" else None)
            ax.set_title(f"{meth} ({len(rs)} seeds)", fontsize=9)
            ax.set_xlabel("evaluated task j")
            ax.set_ylabel("trained through task i")
            fig.colorbar(im, ax=ax, fraction=0.046)
            for j in range(len(M)):
                ax2.plot(range(j, len(M)), [M[i][j] for i in range(j, len(M))], marker="o", ms=3, label=f"task {j}")
            ax2.set_title(meth, fontsize=9)
            ax2.set_xlabel("trained through task i")
        axes2[0][0].set_ylabel(key)
        fig.suptitle(f"{model}: mean {key} matrix", fontsize=10)
        fig2.suptitle(f"{model}: {key} of each task during the stream (forgetting curves)", fontsize=10)
        for f, name in ((fig, f"heatmap_{model}.png"), (fig2, f"curves_{model}.png")):
            f.tight_layout()
            f.savefig(out / name, dpi=90)
            plt.close(f)
            files.append(name)
    return files


def write_report(out: Path, config: dict, runs: list[dict]) -> None:
    kind = next((r["kind"] for r in runs if "skipped" not in r), None)
    sets = (f" --first-seed {config['first_seed']}" if config.get("first_seed") else "") + "".join(
        f" --set {x}" for x in config.get("set", []))
    lines = [f"# Continual learning: {config['benchmark']} ({config['profile']} profile)", "",
             f"Command: `python -m eval.continual --benchmark {config['benchmark']} --methods {config['methods']} "
             f"--models {config['models']} --seeds {config['seeds']} --profile {config['profile']} --out "
             f"{config['out']}{sets}`; torch {config['torch']}, "
             f"{config['threads']} threads, {config['seconds']} s in all."
             + (f" Merged from {', '.join(config['merged_from'])} by `python -m eval.continual_report`."
                if config.get("merged_from") else ""),
             "", "Mean +- std over seeds. ACC/AIA/LA: accuracy (higher is better); BWT < 0 is forgetting; FM is "
             "Chaudhry's max-based forgetting; FWT against the random-init row; Intr.: joint run's diagonal minus "
             "this one's (needs `joint` in --methods); dBPB(gen): general-corpus bits per byte after minus before.",
             ""]
    if kind == "bpb":
        lines += ["Scores are -BPB per domain (so the signs above keep their meaning).", ""]
    if kind == "class":
        lines += ["## Labels seen so far", ""] + table(runs) + ["", "## All labels of the stream", ""]
        lines += table(runs, "metrics_all_labels")
    else:
        lines += table(runs)
    skipped = [r for r in runs if "skipped" in r]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{r['model']} / {r['method']}: {r['skipped']}" for r in skipped)]
    flags = {r["method"]: r["flags"] for r in runs if "skipped" not in r}
    lines += ["", "## Method flags", "",
              "| method | boundaries | task id at test | all past data | example buffer | eval mode |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {m} | {f['uses_boundaries']} | {f['uses_task_id']} | {f['sees_past_data']} | "
              f"{f.get('stores_examples', '?')} | {f['eval_mode']}"
              + (" +persist" if f["persist_cms"] else "") + (" +mf" if f["multi_frequency"] else "") + " |"
              for m, f in flags.items()]
    files = write_plots(out, runs) if kind else []
    lines += [""] + [f"![{f}]({f})" for f in files]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def merge(dirs: list[Path], out: Path) -> None:
    """One report from several ``eval.continual`` result folders of the same benchmark and profile (e.g. one
    job per model run in parallel); metrics are recomputed over the merged runs (intransigence may then find
    a ``joint`` run of another folder). A folder of a stopped job contributes the runs of its
    ``runs.partial.json``, and the report says so."""
    from eval.continual import add_metrics

    results = []
    for d in map(Path, dirs):
        done, partial = d / "results.json", d / "runs.partial.json"
        if not done.exists() and not partial.exists():
            raise SystemExit(f"{d} holds neither results.json nor runs.partial.json")
        results.append(json.loads((done if done.exists() else partial).read_text()))
        if not done.exists():
            results[-1]["config"]["partial"] = True  # a stopped job: the runs it finished
    configs = [r["config"] for r in results]
    for key in ("benchmark", "profile", "profile_sizes"):
        values = {json.dumps(c[key], sort_keys=True) for c in configs}
        if len(values) > 1:
            raise SystemExit(f"cannot merge runs with different {key}: {sorted(values)}")
    runs = [run for r in results for run in r["runs"]]
    add_metrics(runs)
    join = lambda k: ",".join(dict.fromkeys(x for c in configs for x in str(c[k]).split(",")))  # noqa: E731
    config = {**configs[0], "models": join("models"), "methods": join("methods"), "out": str(out),
              "seeds": len({r["seed"] for r in runs}), "first_seed": min(r["seed"] for r in runs),
              "seconds": sum(c["seconds"] for c in configs),
              "merged_from": [str(d) + (" (stopped early: its finished runs)" if c.get("partial") else "")
                              for d, c in zip(dirs, configs)]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"config": config, "runs": runs}, indent=1))
    write_report(out, config, runs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Merge eval.continual result folders into one results.json and "
                                            "report.md.")
    p.add_argument("dirs", nargs="+", type=Path, help="folders holding a results.json")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    merge(args.dirs, args.out)
    print(f"wrote {args.out / 'results.json'}, {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
