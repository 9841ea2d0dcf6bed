"""Long-context probes: sample construction, a small CPU run with the state carried, the heat map."""

from __future__ import annotations

import json
import random

import pytest
from evalhelpers import have, tiny_model

from eval.longctx import make_sample, run
from hope.training.tokenizer import ByteTokenizer


@pytest.mark.parametrize("task", ["passkey", "niah_single", "niah_multi"])
@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_sample_places_the_needle(task, depth):
    tok = ByteTokenizer()
    prompt, answer, key = make_sample(task, tok, 2048, depth, random.Random(0))
    text = tok.decode(prompt)
    assert abs(len(prompt) - 2048) < 8 and tok.decode(answer) == " " + key
    pos = text.index(key) / len(text)
    assert abs(pos - depth) < 0.1
    if task == "niah_multi":
        assert text.count("The special magic number for") == 4 + 1  # 4 needles + the question


def test_small_grid_and_heatmap(tmp_path):
    from eval.longctx import main

    model = tiny_model(cms_chunk_sizes=(None,))
    res = run(model, ByteTokenizer(), ["passkey", "niah_multi"], [96, 160], [0.0, 1.0], samples=1, window=64)
    assert [(c["length"], c["depth"]) for c in res["passkey"]] == [
        (96, 0.0),
        (96, 1.0),
        (160, 0.0),
        (160, 1.0),
    ]
    assert all(0.0 <= c["acc"] <= 1.0 and c["answer_ll"] < 0 for cells in res.values() for c in cells)
    if not have("matplotlib"):
        pytest.skip("matplotlib not installed")
    from safetensors.torch import save_file

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_file(model.state_dict(), str(ckpt / "model.safetensors"))
    (ckpt / "config.json").write_text(json.dumps(model.config.to_dict()))
    ByteTokenizer().save(ckpt)  # the checkpoint records its tokenizer, which the command line then uses
    main(
        [
            "--checkpoint",
            str(ckpt),
            "--tasks",
            "passkey",
            "--lengths",
            "64,128",
            "--depths",
            "0,1",
            "--samples",
            "1",
            "--window",
            "64",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert (tmp_path / "out" / "passkey.png").stat().st_size > 1000
    assert json.loads((tmp_path / "out" / "longctx.json").read_text())["results"]["passkey"]
