"""Batched log-likelihood scoring: the one scorer of evaluation (``eval.commonsense``, LAMBADA, the lm-eval model
in ``eval.harness``) and of the continual-learning harness (``hope.continual``), so all of them give the same
per-item log-likelihoods. It follows lm-eval's ``HFLM`` conventions exactly: the input is
``(context + continuation)[-(max_length + 1):][:-1]``, the score is the summed log-probability of the
continuation tokens and ``is_greedy`` says whether every one is the argmax.

Every request starts from a fresh model state (``state=None``: the meta-learned memories), so requests are
independent of each other and of their order. Rows of a batch are right-padded; the model is causal and its
state is per row, so padding never changes the scored positions.

Requests that share a context (multiple choice, label scoring) are scored, for a :class:`hope.HopeLM`, by
running the context once and continuing its recurrent state into every continuation
(:func:`hope.model.select_state`). By the model's streaming contract this equals scoring each request whole,
to float tolerance (tested); it skips the repeated context, which dominates the cost of label scoring.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hope.model import HopeLM, select_state
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


def _continuation_scores(logits: Tensor, cont: Sequence[int]) -> tuple[float, bool]:
    """Summed log-probability of ``cont`` under ``logits (len(cont), V)`` and whether each is the argmax."""
    target = torch.tensor(cont, device=logits.device)
    lp = F.log_softmax(logits.float(), dim=-1)
    return lp.gather(-1, target[:, None]).sum().item(), bool((lp.argmax(-1) == target).all())


def _padded(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> Tensor:
    x = torch.full((len(rows), max(len(r) for r in rows)), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
    return x.to(device)


def _score_whole(model: nn.Module, inputs: dict[tuple, tuple[list[int], int]], batch_tokens: int, max_batch: int,
                 window: int | None, pad_id: int, device: torch.device) -> dict[tuple, tuple[float, bool]]:
    """Each request as one right-padded row (input = context + continuation minus its last token)."""
    uniq = sorted(inputs, key=lambda k: (-len(k[0]), k))
    lengths = [len(k[0]) for k in uniq]
    results: dict[tuple, tuple[float, bool]] = {}
    for batch in _batches(lengths, batch_tokens, max_batch):
        logits, _ = forward_windows(model, _padded([inputs[uniq[i]][0] for i in batch], pad_id, device), window)
        for r, i in enumerate(batch):
            inp, n = inputs[uniq[i]]
            results[uniq[i]] = _continuation_scores(logits[r, len(inp) - n : len(inp)], uniq[i][1])
    return results


def _score_shared(model: nn.Module, groups: dict[tuple, list[tuple]], batch_tokens: int, max_batch: int,
                  pad_id: int, device: torch.device) -> dict[tuple, tuple[float, bool]]:
    """Contexts of equal length batched and run once; their states continue into every continuation."""
    results: dict[tuple, tuple[float, bool]] = {}
    ctxs = sorted(groups, key=lambda c: (-len(c), c))
    by_len: dict[int, list[tuple]] = {}
    for c in ctxs:
        by_len.setdefault(len(c), []).append(c)
    for length, same in by_len.items():
        step = max(1, min(max_batch, batch_tokens // max(length, 1)))
        for b in range(0, len(same), step):
            batch = same[b : b + step]
            out = model(torch.tensor(batch, dtype=torch.long, device=device))
            last = out.logits[:, -1]
            rows = [(r, cont) for r, c in enumerate(batch) for cont in groups[c]]
            tails = [(r, cont) for r, cont in rows if len(cont) > 1]
            for r, cont in rows:
                if len(cont) == 1:
                    results[(batch[r], cont)] = _continuation_scores(last[r : r + 1], cont)
            width = max((len(cont) - 1 for _, cont in tails), default=0)
            cstep = max(1, min(max_batch * 8, batch_tokens // max(width, 1)))
            for t in range(0, len(tails), cstep):
                part = tails[t : t + cstep]
                idx = torch.tensor([r for r, _ in part], device=device)
                cont_logits = model(_padded([cont[:-1] for _, cont in part], pad_id, device),
                                    state=select_state(out.state, idx)).logits
                for (r, cont), lg in zip(part, cont_logits):
                    full = torch.cat([last[r : r + 1], lg[: len(cont) - 1]])
                    results[(batch[r], cont)] = _continuation_scores(full, cont)
    return results


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
    share_context: bool = True,
) -> list[tuple[float, bool]]:
    """``(sum log p(continuation | context), is_greedy)`` for each request, each from a fresh state.

    Requests are deduplicated, sorted by length (longest first, ties by tokens: the batching does not depend
    on the input order) and right-padded into batches of at most ``batch_tokens`` padded tokens.
    ``share_context``: run a context shared by several requests once (a :class:`hope.HopeLM`, no ``window``,
    no truncation); the scores are the same to float tolerance. """
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
    shared: dict[tuple, list[tuple]] = {}
    if share_context and window is None and isinstance(model, HopeLM):
        by_ctx: dict[tuple, list[tuple]] = {}
        for ctx, cont in requests:
            if ctx and (max_length is None or len(ctx) + len(cont) - 1 <= max_length):
                by_ctx.setdefault(tuple(ctx), []).append(tuple(cont))
        shared = {c: sorted(set(conts)) for c, conts in by_ctx.items() if len(set(conts)) > 1}
    # requests scored by their shared context are keyed by (context, continuation) there
    alias = {}
    for c, conts in shared.items():
        for cont in conts:
            alias[(tuple((list(c) + list(cont))[:-1]), cont)] = (c, cont)
    results = _score_shared(model, shared, batch_tokens, max_batch, pad_id, device) if shared else {}
    whole = {k: v for k, v in inputs.items() if k not in alias}
    results.update(_score_whole(model, whole, batch_tokens, max_batch, window, pad_id, device))
    return [results[alias.get(k, k)] for k in keys]
