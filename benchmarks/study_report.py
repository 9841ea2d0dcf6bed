"""docs/results.md and its PNGs from a study folder's raw results (``benchmarks/study.py``); nothing is rerun.

    python benchmarks/study_report.py runs/study --docs docs
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import statistics
from pathlib import Path
from typing import Any

from study import ABLATIONS, FAMILIES, training_curve

PREFIX = "results_"  # PNG names in the docs folder


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(xs: list[float], digits: int = 3) -> str:
    m, s = _mean_std(xs)
    return f"{m:.{digits}f} +- {s:.{digits}f}"


def compare(base: list[float], other: list[float]) -> dict[str, Any]:
    """``other - base`` in mean held-out bits per byte, and whether it exceeds the seed spread (the sum of the two
    sample standard deviations: a deliberately simple, conservative bar for 3 seeds)."""
    (mb, sb), (mo, so) = _mean_std(base), _mean_std(other)
    delta = mo - mb
    return {"delta": delta, "spread": sb + so, "exceeds": abs(delta) > sb + so}


def load_runs(out: Path, phase: str) -> dict[str, list[dict[str, Any]]]:
    """``label -> [run]`` for one phase; each run has its meta, result, training seconds and curve."""
    runs: dict[str, list[dict[str, Any]]] = {}
    root = out / phase
    for meta_path in sorted(root.glob("*/seed*/meta.json")) if root.exists() else []:
        d = meta_path.parent
        if not (d / "result.json").exists():
            continue
        meta = json.loads(meta_path.read_text())
        curve = training_curve(d)
        run = {**meta, **json.loads((d / "result.json").read_text()), "seconds": curve[-1][1], "curve": curve}
        runs.setdefault(meta["label"], []).append(run)
    return runs


def load_diverged(out: Path, phase: str) -> dict[str, list[dict[str, Any]]]:
    """``label -> [record]`` of the runs of a phase that train.py stopped on non-finite losses."""
    found: dict[str, list[dict[str, Any]]] = {}
    root = out / phase
    for path in sorted(root.glob("*/seed*/diverged.json")) if root.exists() else []:
        rec = json.loads(path.read_text())
        found.setdefault(rec["label"], []).append(rec)
    return found


def bpb(runs: list[dict[str, Any]]) -> list[float]:
    return [r["val_bpb"] for r in runs]


def _verdict(c: dict[str, Any], better_if_lower: bool = True) -> str:
    """``c`` compares the claim's model (other) against its control (base)."""
    if not c["exceeds"]:
        return "not distinguishable at this scale (the difference is within the seed spread)"
    good = c["delta"] < 0 if better_if_lower else c["delta"] > 0
    return "supported" if good else "not supported (the control is better)"


def plot_curves(lm: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for fam in FAMILIES:
        runs = lm.get(fam, [])
        if not runs:
            continue
        n = min(len(r["curve"]) for r in runs)
        tokens = [runs[0]["curve"][i][0] for i in range(n)]
        secs = [statistics.mean(r["curve"][i][1] for r in runs) for i in range(n)]
        loss = [statistics.mean(r["curve"][i][2] for r in runs) for i in range(n)]
        axes[0].plot(tokens, loss, label=fam)
        axes[1].plot(secs, loss, label=fam)
    axes[0].set_xlabel("training tokens")
    axes[1].set_xlabel("training seconds (1 thread)")
    axes[0].set_ylabel("training loss (nats / byte, mean over seeds)")
    axes[0].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lm_section(lm: dict, matched: dict, prof: dict, unigram: dict | None) -> list[str]:
    lines = ["## 1. Language modelling at matched budgets", "",
             f"Shakespeare (byte tokens), batch {prof['batch']} x {prof['seq_len']} tokens, AdamW at peak lr "
             f"{prof['lr']:g} for every model, cosine schedule, held-out bits per byte on {prof['val_tokens']} tokens; "
             "mean +- std over seeds. "
             "FLOPs: `hope.flops` (matmul FLOPs of forward and backward, inner loops and their hand-written "
             "backward included, attention over causal pairs), checked against `FlopCounterMode` in "
             "`tests/test_flops.py`.", "",
             "| model | preset | params | MFLOP / token | budget | steps | tokens | train s / run | GFLOP / run | "
             "held-out bpb | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = [(fam, lm.get(fam, [])) for fam in FAMILIES]
    rows += [(label, runs) for label, runs in matched.items()]
    for label, runs in rows:
        if not runs:
            continue
        r0 = runs[0]
        secs = statistics.mean(r["seconds"] for r in runs)
        gflop = r0["flops_per_token"] * r0["tokens"] / 1e9
        lines.append(f"| {label} | {r0['preset']} | {r0['params'] / 1e6:.2f}M | {r0['flops_per_token'] / 1e6:.1f} | "
                     f"{r0['budget']} | {r0['steps']} | {r0['tokens']:,} | {secs:.1f} | {gflop:,.1f} | "
                     f"{fmt(bpb(runs))} | {len(runs)} |")
    if unigram:
        lines.append(f"| unigram baseline (training byte frequencies) | - | - | - | - | - | - | - | - | "
                     f"{unigram['val_bpb']:.3f} | - |")
    note = []
    if lm.get("HOPE") and unigram:
        worst = max(statistics.mean(bpb(runs)) for runs in lm.values())
        past = "every family ends below" if worst < unigram["val_bpb"] else "not every family ends below"
        note = [f"Budget: {lm['HOPE'][0]['tokens']:,} training tokens per equal-token run, chosen so that every "
                f"phase with its seeds runs within one session on this machine; {past} the unigram baseline "
                f"(worst family mean {worst:.3f} vs {unigram['val_bpb']:.3f}). A small-budget study: its numbers "
                "speak about the first steps of training, not about the paper's 15B-100B-token regime.", ""]
    return lines + [""] + note + [f"![loss curves]({PREFIX}lm_curves.png)", ""]


def ablation_section(lm: dict, ablate: dict, diverged: dict) -> tuple[list[str], dict[str, dict]]:
    base = bpb(lm.get("HOPE", []))
    lines = ["## 2. Ablations of tiny HOPE (paper Table 6 and this code's own choices)", "",
             "Same budget and seeds as the HOPE row of section 1. Delta: ablation minus HOPE in mean held-out bits per "
             "byte (positive: the ablation is worse, so the component helps). 'Exceeds spread': |delta| is larger "
             "than the sum of the two seed standard deviations. 'Diverged': train.py stopped the run after 5 "
             "non-finite losses in a row (the step is given); such a variant is not compared.", "",
             f"| variant | what it tests | overrides | held-out bpb | delta vs HOPE ({fmt(base)}) | exceeds spread |",
             "|---|---|---|---|---|---|"]
    comps = {}
    for name, (what, over) in ABLATIONS.items():
        runs, div = ablate.get(name, []), diverged.get(name, [])
        if not (runs or div) or not base:
            continue
        o = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in over.items())
        if div:
            steps = ", ".join(str(r["step"]) for r in sorted(div, key=lambda r: r["seed"]))
            note = (f"diverged in {len(div)} of {len(div) + len(runs)} seeds "
                    f"(stopped at step {steps} of {div[0]['steps']})")
            shown = f"{fmt(bpb(runs))} over the others; {note}" if runs else note
            lines.append(f"| {name} | {what} | {o} | {shown} | - | - |")
            continue
        c = comps[name] = compare(base, bpb(runs))
        lines.append(f"| {name} | {what} | {o} | {fmt(bpb(runs))} | {c['delta']:+.3f} | "
                     f"{'yes' if c['exceeds'] else 'no'} |")
    return lines + [""], comps


def _copy_png(src: Path, docs: Path, name: str) -> str | None:
    if not src.exists():
        return None
    shutil.copyfile(src, docs / f"{PREFIX}{name}.png")
    return f"{PREFIX}{name}.png"


def recall_section(out: Path, docs: Path) -> tuple[list[str], dict]:
    lines = ["## 3. In-context recall", "", "### MQAR (Arora et al., 2023)", "",
             "Each family trained from scratch on MQAR (`eval.mqar`), accuracy on the queried values of held-out "
             "sequences; chance: a value drawn uniformly from the value vocabulary. Final loss: the training loss "
             "(nats) at the queried values in the last step; a model uniform over the values has ln(1 / chance).",
             "",
             "| model | seq_len | pairs | accuracy | chance |", "|---|---|---|---|---|"]
    summary: dict[str, dict] = {}
    pngs = []
    for fam in FAMILIES:
        path = out / "mqar" / fam / "mqar.json"
        if not path.exists():
            continue
        res = json.loads(path.read_text())
        cells = res["cells"]
        summary.setdefault(fam, {}).update(mqar=statistics.mean(c["acc"] for c in cells),
                                           mqar_chance=statistics.mean(c["chance"] for c in cells),
                                           mqar_loss=res["final_loss"])
        lines += [f"| {fam} | {c['seq_len']} | {c['n_pairs']} | {c['acc']:.3f} | {c['chance']:.3f} |" for c in cells]
        png = _copy_png(out / "mqar" / fam / "mqar.png", docs, f"mqar_{fam.lower().replace('+', 'p')}")
        if png:
            pngs.append(f"![MQAR {fam}]({png})")
    lines += ["", " ".join(pngs), ""] + mqar_long_lines(out, summary)
    lines += ["### Passkey retrieval (`eval.longctx`, section 1's seed-0 checkpoints)", "",
              "| model | length | accuracy (mean over depths) | answer log-likelihood |", "|---|---|---|---|"]
    pngs = []
    for fam in FAMILIES:
        path = out / "passkey" / fam / "longctx.json"
        if not path.exists():
            continue
        cells = json.loads(path.read_text())["results"]["passkey"]
        summary.setdefault(fam, {})["passkey"] = statistics.mean(c["acc"] for c in cells)
        for length in sorted({c["length"] for c in cells}):
            cs = [c for c in cells if c["length"] == length]
            lines.append(f"| {fam} | {length} | {statistics.mean(c['acc'] for c in cs):.2f} | "
                         f"{statistics.mean(c['answer_ll'] for c in cs):.1f} |")
        png = _copy_png(out / "passkey" / fam / "passkey.png", docs, f"passkey_{fam.lower().replace('+', 'p')}")
        if png:
            pngs.append(f"![passkey {fam}]({png})")
    return lines + ["", " ".join(pngs), ""], summary


def tail_loss(losses: list[float]) -> float:
    """Mean training loss over the last tenth of the steps (the last step alone is one noisy batch)."""
    n = max(1, len(losses) // 10)
    return statistics.mean(losses[-n:])


def mqar_long_lines(out: Path, summary: dict) -> list[str]:
    """The table of MQAR's easiest cell at a longer budget (every seed); adds ``mqar_long`` to ``summary``."""
    rows = []
    for fam in FAMILIES:
        res = [json.loads(p.read_text()) for p in sorted((out / "mqar_long" / fam).glob("seed*/mqar.json"))]
        if not res:
            continue
        cell, chance = res[0]["cells"][0], res[0]["cells"][0]["chance"]
        acc, loss = [r["cells"][0]["acc"] for r in res], [tail_loss(r["losses"]) for r in res]
        summary.setdefault(fam, {})["mqar_long"] = {"acc": acc, "loss": loss, "chance": chance}
        if not rows:
            rows = ["### MQAR's easiest cell at a longer budget", "",
                    f"Sequence length {cell['seq_len']}, {cell['n_pairs']} pairs, {res[0]['steps']} training steps of "
                    f"{res[0]['batch']} sequences, one run per seed: does a family at chance above lack the budget, or "
                    "the ability? Loss: the mean training loss at the queried values over the last tenth of the "
                    f"steps (a uniform guess over the values: {-math.log(chance):.2f} nats).", "",
                    "| model | accuracy | chance | loss (last tenth) | train s / run | seeds |",
                    "|---|---|---|---|---|---|"]
        secs = statistics.mean(r["train_seconds"] for r in res)
        rows.append(f"| {fam} | {fmt(acc)} | {chance:.3f} | {fmt(loss, 2)} | {secs:.0f} | {len(res)} |")
    return rows + ([""] if rows else [])


def position_section(out: Path, docs: Path) -> tuple[list[str], dict[str, float]]:
    path = out / "position" / "position_loss.json"
    if not path.exists():
        return [], {}
    res = json.loads(path.read_text())
    curves = res["curves"]  # label -> [{"start", "end", "bpb", ...}]
    names = list(curves)
    lines = ["## 4. Test-time memorisation: loss by position in long held-out documents", "",
             f"`eval.position_loss` on section 1's seed-0 checkpoints ({res.get('documents', '?')} held-out documents "
             f"of {res.get('seq_len', '?')} bytes, read {res.get('window', '?')} tokens at a time with the state "
             "carried; attention keeps its KV cache). Held-out bits per byte per position bucket.", "",
             "| positions | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    n = min(len(curves[k]) for k in names)
    for i in range(n):
        b = curves[names[0]][i]
        cells = " | ".join(f"{curves[k][i]['bpb']:.3f}" for k in names)
        lines.append(f"| {b['start']}-{b['end'] - 1} | {cells} |")
    drop = {k: curves[k][0]["bpb"] - curves[k][n - 1]["bpb"] for k in names}
    lines += ["", "First bucket minus last (the fall deeper into the document): "
              + ", ".join(f"{k} {v:+.3f}" for k, v in drop.items()) + "."]
    png = _copy_png(out / "position" / "position_loss.png", docs, "position_loss")
    return lines + (["", f"![loss by position]({png})"] if png else []) + [""], drop


def claims_section(lm: dict, matched: dict, comps: dict, recall: dict, drop: dict, diverged: dict,
                   ablate: dict) -> list[str]:
    lines = ["## 5. What it means", "", "Verdicts follow one rule, written in `benchmarks/study_report.py`: a claim "
             "is supported when the difference favours it by more than the seed spread, not supported when it "
             "goes the other way by more than the spread, and not distinguishable otherwise.", ""]
    hope = bpb(lm.get("HOPE", []))
    for budget in ("equal tokens", "equal wall-clock", "equal FLOPs"):
        ctrl = lm.get("Transformer++") if budget == "equal tokens" else matched.get(f"Transformer++ {budget}")
        if hope and ctrl:
            c = compare(bpb(ctrl), hope)
            lines.append(f"- **LM quality vs Transformer++ at {budget}**: HOPE {fmt(hope)} vs {fmt(bpb(ctrl))} bits "
                         f"per byte (delta {c['delta']:+.3f}): {_verdict(c)}.")
    for claim, name in (("CMS helps", "w/o CMS (static levels)"), ("DGD helps", "DGD -> plain GD"),
                        ("momentum helps", "w/o momentum"), ("self-modification helps", "w/o self-modification")):
        if name in comps:
            c = comps[name]
            flipped = {**c, "delta": -c["delta"]}  # HOPE minus the ablation: negative favours the claim
            lines.append(f"- **{claim}** (vs '{name}'): delta {c['delta']:+.3f} bits per byte for removing it: "
                         f"{_verdict(flipped)}.")
    own = []
    for name, (what, _) in ABLATIONS.items():
        if not what.startswith("this code"):
            continue
        if name in diverged:
            n_div, n_all = len(diverged[name]), len(diverged[name]) + len(ablate.get(name, []))
            own.append(f"'{name}' diverged in {n_div} of {n_all} seeds: the choice keeps training finite")
        elif name in comps:
            c = comps[name]
            own.append(f"'{name}' {c['delta']:+.3f} ({'exceeds' if c['exceeds'] else 'within'} the spread)")
    if own:
        lines.append("- **This code's own modelling choices** (docs/semantics.md; removing each, bits per byte): "
                     + "; ".join(own) + ".")
    if recall:
        parts = [f"{k}: MQAR {v.get('mqar', float('nan')):.3f} (chance {v.get('mqar_chance', float('nan')):.3f}, "
                 f"final loss {v.get('mqar_loss', float('nan')):.2f}), passkey {v.get('passkey', float('nan')):.2f}"
                 for k, v in recall.items()]
        lines.append("- **Long-context recall** (mean accuracy over cells; one training run per family, no seed "
                     "spread): " + "; ".join(parts) + ". " + _mqar_verdict(recall) + _mqar_long_verdict(recall) + " "
                     + _recall_verdict(recall))
    if drop:
        hope_key, tpp_key = "HOPE", "Transformer++"
        if hope_key in drop and tpp_key in drop:
            lines.append(f"- **Continual memorisation within a document** (Fig. 10): the loss falls by "
                         f"{drop[hope_key]:+.3f} bits per byte from the first to the last bucket for HOPE and by "
                         f"{drop[tpp_key]:+.3f} for Transformer++: "
                         + ("HOPE's falls more" if drop[hope_key] > drop[tpp_key] else "HOPE's does not fall more")
                         + ", indicative only: one checkpoint per family and no seed spread.")
    return lines + [""]


def _mqar_verdict(recall: dict) -> str:
    """Which families learnt nothing on MQAR: final loss within 0.05 nats of a uniform guess over the values."""
    blank = [k for k, v in recall.items() if "mqar_loss" in v and v["mqar_loss"] > -math.log(v["mqar_chance"]) - 0.05]
    if not blank:
        return "MQAR: every family learnt beyond a uniform guess over the values."
    return "MQAR: " + ", ".join(blank) + (" has" if len(blank) == 1 else " have") + " learnt nothing at this budget " \
        "(final loss within 0.05 nats of a uniform guess over the values)."


def _mqar_long_verdict(recall: dict) -> str:
    """Which families learn MQAR's easiest cell at the longer budget: mean accuracy above chance by more than its
    seed spread and a loss (last tenth) below a uniform guess by more than 0.05 nats."""
    longs = {k: v["mqar_long"] for k, v in recall.items() if "mqar_long" in v}
    if not longs:
        return ""
    learnt, blank = [], []
    for fam, r in longs.items():
        (acc, acc_sd), (loss, _) = _mean_std(r["acc"]), _mean_std(r["loss"])
        ok = acc - acc_sd > r["chance"] and loss < -math.log(r["chance"]) - 0.05
        (learnt if ok else blank).append(f"{fam} {acc:.3f}")
    text = " At the longer budget on the easiest cell (accuracy, mean over seeds): "
    if learnt:
        text += "learnt by " + ", ".join(learnt)
    if blank:
        text += ("; " if learnt else "") + "still at chance: " + ", ".join(blank)
    return text + "."


def _recall_verdict(recall: dict) -> str:
    pk = [v.get("passkey", 0.0) for v in recall.values()]
    if pk and max(pk) == 0:
        return "Passkey: not measurable at this scale (every model scores 0)."
    h, t = recall.get("HOPE", {}), recall.get("Transformer++", {})
    if "passkey" in h and "passkey" in t:
        return "Passkey: HOPE " + ("above" if h["passkey"] > t["passkey"] else "not above") + " Transformer++."
    return ""


def write_report(out: Path, docs: Path) -> str:
    """Write ``docs/results.md`` and its PNGs from ``out``; returns the markdown's path."""
    docs.mkdir(parents=True, exist_ok=True)
    study = json.loads((out / "study.json").read_text())
    lm, ablate, matched = load_runs(out, "lm"), load_runs(out, "ablate"), load_runs(out, "matched")
    lines = ["# Results: the evidence study", "",
             f"Generated by `python benchmarks/study_report.py {out} --docs {docs}` from the raw results of "
             + ", ".join(f"`{c}`" for c in study["commands"]) + f" (profile `{study['profile']}`); "
             f"{platform.machine()} CPU, {platform.python_version()}, one thread per run "
             "(`--jobs` runs at a time, as in the commands). "
             "Numbers are what those runs measured; nothing here is edited by hand.", ""]
    plot_curves(lm, docs / f"{PREFIX}lm_curves.png")
    unigram = json.loads((out / "unigram.json").read_text()) if (out / "unigram.json").exists() else None
    lines += lm_section(lm, matched, study, unigram)
    diverged = load_diverged(out, "ablate")
    abl, comps = ablation_section(lm, ablate, diverged)
    lines += abl
    rec, summary = recall_section(out, docs)
    lines += rec
    pos, drop = position_section(out, docs)
    lines += pos
    lines += claims_section(lm, matched, comps, summary, drop, diverged, ablate)
    path = docs / "results.md"
    path.write_text("\n".join(lines))
    return str(path)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("--docs", default=str(Path(__file__).resolve().parent.parent / "docs"))
    a = p.parse_args()
    print(write_report(Path(a.run_dir), Path(a.docs)))
