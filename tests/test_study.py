"""benchmarks/study.py's quick profile end to end: every table of results.md comes from the raw results."""

import json
import re
import statistics
import sys
from pathlib import Path

import pytest
from subprocess_helpers import run_command

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import study  # noqa: E402
import study_report  # noqa: E402


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    docs = out / "docs"
    proc = run_command([sys.executable, str(ROOT / "benchmarks" / "study.py"), "--profile", "quick", "--out",
                        str(out / "raw"), "--docs", str(docs), "--jobs", "2"], timeout=1500, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "raw", docs


def _table(md: str, header_start: str) -> list[list[str]]:
    """Rows (cells) of the markdown table whose header line starts with ``header_start``."""
    lines = md.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _mean_bpb(raw: Path, phase: str, label: str) -> float:
    runs = sorted(study.run_dir(raw, phase, label, 0).parent.glob("seed*/result.json"))
    assert runs, (phase, label)
    return statistics.mean(json.loads(p.read_text())["val_bpb"] for p in runs)


def test_every_table_comes_from_the_raw_results(quick_study):
    raw, docs = quick_study
    md = (docs / "results.md").read_text()
    for png in re.findall(r"\]\((results_[^)]+\.png)\)", md):
        assert (docs / png).stat().st_size > 1000, png

    lm = _table(md, "| model | preset |")
    unigram = lm.pop()
    assert unigram[0].startswith("unigram baseline")
    assert float(unigram[9]) == pytest.approx(json.loads((raw / "unigram.json").read_text())["val_bpb"], abs=6e-4)
    labels = [r[0] for r in lm]
    assert labels[:4] == list(study.FAMILIES)
    assert {f"{f} {b}" for f in list(study.FAMILIES)[1:] for b in ("equal wall-clock", "equal FLOPs")} <= set(labels)
    for row in lm:
        phase = "lm" if row[0] in study.FAMILIES else "matched"
        assert float(row[9].split(" +- ")[0]) == pytest.approx(_mean_bpb(raw, phase, row[0]), abs=6e-4), row
        assert row[10] == "2"

    ablations = _table(md, "| variant |")
    assert [r[0] for r in ablations] == list(study.ABLATIONS)
    hope = _mean_bpb(raw, "lm", "HOPE")
    for row in ablations:
        diverged = sorted(study.run_dir(raw, "ablate", row[0], 0).parent.glob("seed*/diverged.json"))
        if diverged:
            assert f"diverged in {len(diverged)} of" in row[3] and row[4] == "-", row
            continue
        mean = _mean_bpb(raw, "ablate", row[0])
        assert float(row[3].split(" +- ")[0]) == pytest.approx(mean, abs=6e-4)
        assert float(row[4]) == pytest.approx(mean - hope, abs=1.5e-3)

    mqar = _table(md, "| model | seq_len |")
    for fam in study.FAMILIES:
        cells = json.loads((raw / "mqar" / fam / "mqar.json").read_text())["cells"]
        mine = [r for r in mqar if r[0] == fam]
        assert [float(r[3]) for r in mine] == pytest.approx([c["acc"] for c in cells], abs=6e-4)

    long_cell = _table(md, "| model | accuracy | chance |")
    assert [r[0] for r in long_cell] == list(study.FAMILIES)
    for row in long_cell:
        res = [json.loads(p.read_text()) for p in sorted((raw / "mqar_long" / row[0]).glob("seed*/mqar.json"))]
        assert row[5] == str(len(res)) == "2"
        assert [r["seed"] for r in res] == [0, 1]
        assert float(row[1].split(" +- ")[0]) == pytest.approx(statistics.mean(r["cells"][0]["acc"] for r in res),
                                                             abs=6e-4)
        tails = [statistics.mean(r["losses"][-max(1, len(r["losses"]) // 10):]) for r in res]
        assert float(row[3].split(" +- ")[0]) == pytest.approx(statistics.mean(tails), abs=6e-3)

    passkey = _table(md, "| model | length |")
    assert {r[0] for r in passkey} == set(study.FAMILIES)
    pos = _table(md, "| positions |")
    assert len(pos) == study.PROFILES["quick"].position_len // study.PROFILES["quick"].position_bucket
    assert "## 5. What it means" in md and "LM quality vs Transformer++ at equal FLOPs" in md


def test_report_regenerates_identically(quick_study, tmp_path):
    raw, docs = quick_study
    again = Path(study_report.write_report(raw, tmp_path)).read_text()
    first = (docs / "results.md").read_text()
    strip = lambda s: re.sub(r"--docs \S+", "", s)  # noqa: E731  (the docs folder is named in the header)
    assert strip(again) == strip(first)


def test_matched_budgets_follow_phase_one(quick_study):
    raw, _ = quick_study
    prof = study.PROFILES["quick"]
    hope_s = statistics.mean(study.train_seconds(study.run_dir(raw, "lm", "HOPE", s)) for s in range(prof.seeds))
    hope_f = study.flops_per_token(study.model_config("tiny", prof, {}), prof.seq_len)
    for fam, preset in list(study.FAMILIES.items())[1:]:
        f = study.flops_per_token(study.model_config(preset, prof, {}), prof.seq_len)
        meta = json.loads((study.run_dir(raw, "matched", f"{fam} equal FLOPs", 0) / "meta.json").read_text())
        assert meta["steps"] == max(1, round(prof.steps * hope_f / f))
        assert meta["flops_per_token"] * meta["tokens"] == pytest.approx(
            hope_f * prof.steps * prof.batch * prof.seq_len, rel=0.5 / prof.steps + 1 / meta["steps"])
        meta = json.loads((study.run_dir(raw, "matched", f"{fam} equal wall-clock", 0) / "meta.json").read_text())
        per_step = statistics.mean(study.train_seconds(study.run_dir(raw, "lm", fam, s))
                                   for s in range(prof.seeds)) / prof.steps
        assert meta["steps"] == max(1, round(hope_s / per_step))


def test_unknown_phase_is_refused(tmp_path):
    proc = run_command([sys.executable, str(ROOT / "benchmarks" / "study.py"), "--profile", "quick", "--out",
                        str(tmp_path), "--phases", "lm,nope"], timeout=300, cwd=ROOT)
    assert proc.returncode != 0 and "unknown phase 'nope'" in proc.stderr


def test_a_diverged_ablation_is_a_result_not_a_failure(tmp_path):
    """train.py's abort on non-finite losses is recorded for runs that may diverge; any other failure stops."""
    abort = [sys.executable, "-c", "print('step 7: 5 non-finite losses in a row; aborting'); raise SystemExit(1)"]
    job = study.Job("abl", abort, tmp_path / "a" / "result.json", tmp_path / "a" / "train.log",
                    {"label": "x", "seed": 0, "steps": 80}, tmp_path / "a" / "diverged.json")
    study.run_jobs([job], 1)
    assert json.loads(job.diverged.read_text())["step"] == 7 and job.done
    other = study.Job("lm", abort, tmp_path / "b" / "result.json", tmp_path / "b" / "train.log", {})
    with pytest.raises(RuntimeError, match="lm failed"):
        study.run_jobs([other], 1)
    crash = [sys.executable, "-c", "raise SystemExit(3)"]
    job = study.Job("abl2", crash, tmp_path / "c" / "result.json", tmp_path / "c" / "train.log", {},
                    tmp_path / "c" / "diverged.json")
    with pytest.raises(RuntimeError, match="abl2 failed"):
        study.run_jobs([job], 1)


def test_report_shows_a_diverged_ablation(quick_study, tmp_path):
    """An ablation whose seeds diverged is reported as such (with the steps), not compared."""
    import shutil

    raw, _ = quick_study
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    name = list(study.ABLATIONS)[-1]
    for seed in range(study.PROFILES["quick"].seeds):
        d = study.run_dir(copy, "ablate", name, seed)
        (d / "result.json").unlink(missing_ok=True)
        meta = json.loads((d / "meta.json").read_text())
        (d / "diverged.json").write_text(json.dumps({"step": 2 + seed, **meta}))
    md = Path(study_report.write_report(copy, tmp_path / "docs")).read_text()
    row = next(r for r in _table(md, "| variant |") if r[0] == name)
    assert "diverged in 2 of 2 seeds (stopped at step 2, 3 of 3)" in row[3] and row[4:] == ["-", "-"]
    assert f"'{name}' diverged" not in md  # the last row tests a step size, not one of this code's choices
