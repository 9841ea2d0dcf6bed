"""The runner and the real-data streams (skipped without ../shared/data)."""

import json

import pytest

from eval import continual_data as data
from eval.continual import main
from hope.continual.text import class_incremental_stream, lm_stream

needs_data = pytest.mark.skipif(not (data.DEFAULT_DATA / "clinc150").is_dir(), reason="shared/data absent")


@needs_data
def test_clinc150_and_banking77_tasks():
    c = data.clinc150()
    assert len(c["tasks"]) == 10 and all(len(cs) == 15 for _, cs in c["tasks"])
    assert len(c["train"]) == 150 * 100 and len(c["test"]) == 150 * 30
    b = data.banking77()
    assert len(b["tasks"]) == 7 and all(len(cs) == 11 for _, cs in b["tasks"])
    s = class_incremental_stream("clinc", c["train"], c["test"], c["labels"], c["tasks"][:2], train_per_class=3,
                                 test_per_class=2)
    assert [len(e.train) for e in s.experiences] == [45, 45] and [len(e.test) for e in s.experiences] == [30, 30]
    assert set(s.experiences[1].classes) == set(range(15, 30))
    assert bytes(s.label_targets[c["labels"].index("pin_change")]) == b" pin change\n"


def test_stream_validation():
    with pytest.raises(ValueError, match="repeats classes"):
        class_incremental_stream("x", [("a", 0), ("b", 1)], [("a", 0), ("b", 1)], ["p", "q"],
                                 [("t0", [0, 1]), ("t1", [1])])
    with pytest.raises(ValueError, match="no train or test"):
        class_incremental_stream("x", [("a", 0)], [("a", 0)], ["p", "q"], [("t0", [0]), ("t1", [1])])
    s = lm_stream("lm", [("d0", ["abcdef" * 10], ["xyz" * 5])], chunk_bytes=16)
    assert s.kind == "bpb" and all(len(e.target) <= 16 for e in s.experiences[0].train)


@needs_data
@pytest.mark.parametrize("benchmark", ["clinc150", "lm"])
def test_runner_writes_results_report_and_plots(tmp_path, benchmark):
    extra = ["--lm-domains", "pydoc,clinc"] if benchmark == "lm" else []
    rc = main(["--benchmark", benchmark, "--methods", "naive,joint,naive+frozen", "--models", "micro",
               "--seeds", "1", "--profile", "smoke", "--out", str(tmp_path), "--max-len", "64"] + extra)
    assert rc == 0
    res = json.loads((tmp_path / "results.json").read_text())
    runs = {r["method"]: r for r in res["runs"]}
    assert "skipped" in runs["naive+frozen"]  # micro (attention) has no in-context levels
    r = runs["naive"]
    assert len(r["acc_matrix"]) == 2 and all(len(row) == 2 for row in r["acc_matrix"])
    assert r["metrics"]["intransigence"] is not None and r["metrics"]["retention_bpb"] is not None
    assert r["eval_changed_state"] == 0
    if benchmark == "clinc150":
        assert "metrics_all_labels" in r and set(r["matrices"]) == {"acc_all", "acc_seen"}
    else:
        assert all(v > 0 for row in r["bpb_matrix"] for v in row)
    report = (tmp_path / "report.md").read_text()
    assert "| micro | naive | 1 |" in report
    assert "| joint | False | False | True | False | adaptive |" in report  # cumulative data, no example buffer
    assert (tmp_path / "heatmap_micro.png").stat().st_size > 1000
    assert (tmp_path / "curves_micro.png").stat().st_size > 1000


def test_runner_rejects_unknown_methods(tmp_path):
    with pytest.raises(SystemExit, match="unknown method"):
        main(["--benchmark", "cipher", "--methods", "nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown switch"):
        main(["--benchmark", "cipher", "--methods", "naive+fast", "--out", str(tmp_path)])


def test_profile_overrides_are_checked_and_recorded(tmp_path):
    from eval.continual import PROFILES, apply_overrides

    prof = apply_overrides(PROFILES["quick"], ["epochs=5", "lr=3e-4", "tasks=none"])
    assert (prof.epochs, prof.lr, prof.tasks) == (5, 3e-4, None) and PROFILES["quick"].epochs == 3
    with pytest.raises(SystemExit, match="FIELD one of"):
        apply_overrides(PROFILES["quick"], ["epoch=5"])
    with pytest.raises(SystemExit, match="takes an int"):
        apply_overrides(PROFILES["quick"], ["epochs=two"])


@needs_data
def test_merged_report_equals_one_run_of_both_models(tmp_path):
    """Two jobs (one model each) merged give the runs, metrics and table rows of one job over both models."""
    common = ["--benchmark", "clinc150", "--methods", "naive", "--seeds", "1", "--profile", "smoke", "--max-len",
              "64", "--set", "epochs=2"]
    for m, first in (("micro", "0"), ("micro-hope", "1")):
        assert main(common + ["--models", m, "--first-seed", first, "--out", str(tmp_path / m)]) == 0
    from eval.continual_report import main as report_main

    assert report_main([str(tmp_path / "micro"), str(tmp_path / "micro-hope"), "--out", str(tmp_path / "all")]) == 0
    merged = json.loads((tmp_path / "all" / "results.json").read_text())
    assert [(r["model"], r["seed"]) for r in merged["runs"]] == [("micro", 0), ("micro-hope", 1)]
    assert merged["config"]["seeds"] == 2
    for r in merged["runs"]:
        one = json.loads((tmp_path / r["model"] / "results.json").read_text())["runs"][0]
        assert r["acc_matrix"] == one["acc_matrix"] and r["metrics"] == one["metrics"]
    report = (tmp_path / "all" / "report.md").read_text()
    assert "| micro | naive | 1 |" in report and "| micro-hope | naive | 1 |" in report
    assert "--set epochs=2" in report and "Merged from" in report
    assert merged["config"]["profile_sizes"]["epochs"] == 2
    stopped = json.loads((tmp_path / "micro-hope" / "results.json").read_text())  # a job stopped after its run
    for r in stopped["runs"]:
        r.pop("metrics")
    (tmp_path / "micro-hope" / "results.json").unlink()
    (tmp_path / "micro-hope" / "runs.partial.json").write_text(json.dumps(stopped))
    assert report_main([str(tmp_path / "micro"), str(tmp_path / "micro-hope"), "--out", str(tmp_path / "p")]) == 0
    again = json.loads((tmp_path / "p" / "results.json").read_text())
    assert again["runs"][1]["metrics"] == merged["runs"][1]["metrics"]
    assert "stopped early" in (tmp_path / "p" / "report.md").read_text()
    (tmp_path / "other").mkdir()
    other = json.loads((tmp_path / "micro" / "results.json").read_text())
    other["config"]["profile"] = "quick"
    (tmp_path / "other" / "results.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="different profile"):
        report_main([str(tmp_path / "micro"), str(tmp_path / "other"), "--out", str(tmp_path / "bad")])
