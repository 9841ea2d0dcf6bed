"""HOPE models in lm-evaluation-harness.

``--model hope`` is an lm-eval ``TemplateLM`` over a HOPE checkpoint (a train.py checkpoint or a ``hope.hf`` folder)
with the tokenizer it was trained with (recorded in the checkpoint), byte-level included. Its
``_loglikelihood_tokens`` is :func:`eval.scoring.score_requests`, the scorer of ``eval.commonsense``, so both give
the same per-item log-likelihoods; ``loglikelihood_rolling`` carries the recurrent state across windows
(``rolling=carry``, default for SMT/Titans) or uses lm-eval's disjoint windows (``rolling=disjoint``, default for
attention). Every request starts from a fresh state.

``--model hf`` also works on a ``python -m hope.hf convert`` folder (this module imports ``hope.hf``, which
registers the Auto classes; the conversion saves the checkpoint's tokenizer in Hugging Face's format) and
gives the same per-item log-likelihoods. ``eval/tasks`` holds task YAMLs for the offline data
(``hope_piqa``, ..., group ``hope_table1``); pass ``--include_path eval/tasks``.

    python -m eval.harness run --model hope --model_args checkpoint=runs/tiny \\
        --tasks hope_table1 --include_path eval/tasks --limit 100
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401  (fills the registry so that "hf" & co. stay available beside "hope")
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from torch import nn

from eval.perplexity import carry_loglikelihoods, default_mode, disjoint_loglikelihoods
from eval.scoring import Tokenizer, default_max_length, load_model_and_tokenizer, score_requests

TASKS_DIR = Path(__file__).with_name("tasks")

try:  # register HopeForCausalLM with the Auto classes for --model hf
    import hope.hf  # noqa: F401
except ImportError:  # transformers is optional
    pass


@register_model("hope")
class HopeEvalLM(TemplateLM):
    """lm-eval model over a :class:`~hope.model.HopeLM`.

    ``model_args``: ``checkpoint`` (or ``pretrained``) directory, ``tokenizer`` (default: the checkpoint's own; another
    is refused unless ``allow_tokenizer_mismatch=true``), ``device``, ``max_length`` (left truncation; default:
    ``max_seq_len`` for attention, none for recurrent mixers), ``rolling`` (``carry``/``disjoint``), ``window``
    (tokens per forward when carrying), ``batch_tokens`` (padded-token budget per batch). ``model``/``tok`` objects
    may be passed from Python. """

    def __init__(
        self,
        checkpoint: str | None = None,
        pretrained: str | None = None,
        tokenizer: str | None = None,
        allow_tokenizer_mismatch: bool | str = False,
        device: str = "cpu",
        max_length: int | str | None = None,
        rolling: str | None = None,
        window: int | str | None = None,
        batch_tokens: int | str = 16384,
        model: nn.Module | None = None,
        tok: Tokenizer | None = None,
        batch_size: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"  # lm-eval's CLI asks for cuda by default
        if model is None:
            path = checkpoint or pretrained
            if path is None:
                raise ValueError("pass model_args checkpoint=<dir>")
            allow = str(allow_tokenizer_mismatch).lower() in ("1", "true", "yes")
            _, model, tok = load_model_and_tokenizer(path, tokenizer, allow, device)
        elif tok is None:
            raise ValueError("pass tok= (a hope.training.tokenizer tokenizer) together with model=")
        self.model = model.eval()
        cfg = model.config
        self.tok = tok
        self._max_length = (
            int(max_length) if max_length not in (None, "", "None") else default_max_length(cfg)
        )
        self.rolling = rolling or default_mode(cfg.mixer)
        self.window = int(window) if window not in (None, "", "None") else cfg.max_seq_len
        self.batch_tokens = int(batch_tokens)
        self._device = torch.device(device)

    # ---- TemplateLM interface -----------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tok.eos_id

    @property
    def max_length(self) -> int | None:
        return self._max_length

    @property
    def device(self) -> torch.device:
        return self._device

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.tok.encode(string)

    def tok_decode(self, tokens: list[int], **kwargs: Any) -> str:
        return self.tok.decode(tokens)

    def _loglikelihood_tokens(self, requests: list, disable_tqdm: bool = False, **kwargs: Any) -> list:
        reqs = [(ctx, cont) for _, ctx, cont in requests]
        return score_requests(self.model, reqs, max_length=self._max_length, batch_tokens=self.batch_tokens)

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        docs = [self.tok.encode(req.args[0]) for req in requests]
        if self.rolling == "carry":
            return carry_loglikelihoods(self.model, docs, self.eot_token_id, self.window)
        return disjoint_loglikelihoods(
            self.model, docs, self.eot_token_id, self._max_length or self.window, self.batch_tokens
        )

    @torch.no_grad()
    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuation of each context (fresh state), cut at the first ``until`` string."""
        out = []
        for req in requests:
            context, gen_kwargs = req.args
            until = gen_kwargs.get("until", [self.tok.decode([self.eot_token_id])])
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.get("max_gen_toks", 256))
            ids = self.tok.encode(context) or [self.eot_token_id]
            if self._max_length:
                ids = ids[-self._max_length :]
            x = torch.tensor([ids], device=next(self.model.parameters()).device)
            new = self.model.generate(x, max_new_tokens=max_new, eos_id=self.eot_token_id)[0].tolist()
            if self.eot_token_id in new:
                new = new[: new.index(self.eot_token_id)]
            text = self.tok.decode(new)
            for u in until:
                if u and u in text:
                    text = text[: text.index(u)]
            out.append(text)
        return out


def main(argv: list[str] | None = None) -> None:
    """lm-eval's command line with the ``hope`` model registered (``python -m eval.harness run ...``)."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
