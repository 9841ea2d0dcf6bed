"""Batched log-likelihood scoring: the one scorer of evaluation (``eval.commonsense``, LAMBADA, the lm-eval model
in ``eval.harness``) and of the continual-learning harness (``hope.continual``), so all of them give the same
per-item log-likelihoods. It follows lm-eval's ``HFLM`` conventions exactly: the input is
``(context + continuation)[-(max_length + 1):][:-1]``, the score is the summed log-probability of the
continuation tokens and ``is_greedy`` says whether every one is the argmax.

Every request starts from a fresh model state (``state=None``: the meta-learned memories), so requests are
independent of each other and of their order. Rows of a batch are right-padded; the model is causal and its
state is per row, so padding never changes the scored positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hope.training.tokenizer import Tokenizer

Request = tuple[list[int], list[int]]  # (context tokens, continuation tokens)


def encode_pair(tok: Tokenizer, context: str, continuation: str) -> Request:
    """lm-eval's ``TemplateLM`` encoding: trailing context whitespace moves to the continuation, the pair is
    encoded whole and split; an empty context becomes the prefix token (the document separator)."""
    if context == "":
        cont = tok.encode(continuation)
        if cont and cont[0] == tok.eos_id:
            return cont[:1], cont[1:]
        return [tok.eos_id], cont
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok.encode(context + continuation)
    ctx = tok.encode(context)
    return ctx, whole[len(ctx) :]


def forward_windows(
    model: nn.Module, x: Tensor, window: int | None = None, state=None
) -> tuple[Tensor, list]:
    """Logits for ``x (B, T)`` computed ``window`` tokens at a time, carrying the recurrent state (equal to
    one call by the model's streaming contract; bounds activation memory for long inputs)."""
    if window is None or x.shape[1] <= window:
        out = model(x, state=state)
        return out.logits, out.state
    logits = []
    for s in range(0, x.shape[1], window):
        out = model(x[:, s : s + window], state=state)
        logits.append(out.logits)
        state = out.state
    return torch.cat(logits, dim=1), state


def _batches(lengths: list[int], batch_tokens: int, max_batch: int) -> list[list[int]]:
    """Greedy batches over indices already sorted by decreasing length, within a padded-token budget."""
    batches, cur = [], []
    for i in range(len(lengths)):
        if cur and ((len(cur) + 1) * lengths[cur[0]] > batch_tokens or len(cur) >= max_batch):
            batches.append(cur)
            cur = []
        cur.append(i)
    return batches + ([cur] if cur else [])


@torch.no_grad()
def score_requests(
    model: nn.Module,
    requests: Sequence[Request],
    *,
    max_length: int | None = None,
    batch_tokens: int = 16384,
    max_batch: int = 64,
    window: int | None = None,
    pad_id: int = 0,
) -> list[tuple[float, bool]]:
    """``(sum log p(continuation | context), is_greedy)`` for each request, each from a fresh state.

    Requests are deduplicated, sorted by length (longest first, ties by tokens: the batching does not depend
    on the input order) and right-padded into batches of at most ``batch_tokens`` padded tokens. """
    device = next(model.parameters()).device
    inputs: dict[tuple, tuple[list[int], int]] = {}
    keys = []
    for ctx, cont in requests:
        if not cont:
            raise ValueError("a request needs at least one continuation token")
        full = list(ctx) + list(cont)
        inp = full[-(max_length + 1) :][:-1] if max_length else full[:-1]
        key = (tuple(inp), tuple(cont))
        inputs[key] = (inp, len(cont))
        keys.append(key)
    uniq = sorted(inputs, key=lambda k: (-len(k[0]), k))
    lengths = [len(k[0]) for k in uniq]
    results: dict[tuple, tuple[float, bool]] = {}
    for batch in _batches(lengths, batch_tokens, max_batch):
        width = lengths[batch[0]]
        x = torch.full((len(batch), width), pad_id, dtype=torch.long)
        for r, i in enumerate(batch):
            inp = inputs[uniq[i]][0]
            x[r, : len(inp)] = torch.tensor(inp, dtype=torch.long)
        logits, _ = forward_windows(model, x.to(device), window)
        for r, i in enumerate(batch):
            inp, n = inputs[uniq[i]]
            cont = torch.tensor(uniq[i][1], device=device)
            lp = F.log_softmax(logits[r, len(inp) - n : len(inp)].float(), dim=-1)
            ll = lp.gather(-1, cont[:, None]).sum().item()
            results[uniq[i]] = (ll, bool((lp.argmax(-1) == cont).all()))
    return [results[k] for k in keys]
