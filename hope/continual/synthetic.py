"""A synthetic stream with a task-similarity knob: per-task letter ciphers (a CTNL analogue, cl_eval.md §6.3).

Task k maps each of ``alphabet`` letters through its own permutation; an item is ``<bos> k x =`` -> ``sigma_k(x)``
(the task digit is in the input, so joint training can solve every task at once, while naive fine-tuning on
task k overwrites the readout of the earlier tasks: high input similarity, conflicting outputs, the worst case
for forgetting). ``shared`` is the fraction of letters whose image is the same as in the previous task: 1.0
gives identical tasks, 0.0 tasks that disagree on every letter.
"""

from __future__ import annotations

import random

from hope.continual.stream import Example, Experience, Stream

BOS = 256


def cipher_maps(n_tasks: int, alphabet: int, shared: float, rng: random.Random) -> list[list[int]]:
    if not 0.0 <= shared <= 1.0:
        raise ValueError(f"shared must be in [0, 1], got {shared}")
    if not 2 <= alphabet <= 26:
        raise ValueError(f"alphabet must have 2..26 letters, got {alphabet}")
    first = list(range(alphabet))
    rng.shuffle(first)
    maps = [first]
    for _ in range(1, n_tasks):
        prev = maps[-1]
        n_change = alphabet - round(shared * alphabet)
        changed = rng.sample(range(alphabet), 2 if n_change == 1 else n_change)  # one letter cannot move alone
        new = list(prev)
        images = [prev[i] for i in changed]
        rot = images[1:] + images[:1]  # a cyclic shift: every changed letter gets a different image
        for i, img in zip(changed, rot):
            new[i] = img
        maps.append(new)
    return maps


def _item(task: int, x: int, sigma: list[int]) -> Example:
    ctx = (BOS, ord("0") + task % 10, ord("a") + x, ord("="))
    return Example(ctx, (ord("a") + sigma[x],), label=-1)


def cipher_stream(n_tasks: int = 2, alphabet: int = 16, shared: float = 0.0, train_per_letter: int = 8,
                  test_per_letter: int = 2, seed: int = 0) -> Stream:
    """The cipher stream: ``kind="exact"`` (accuracy = the greedy continuation is the cipher letter)."""
    rng = random.Random(seed)
    maps = cipher_maps(n_tasks, alphabet, shared, rng)
    exps = []
    for k, sigma in enumerate(maps):
        train = [_item(k, x, sigma) for x in range(alphabet) for _ in range(train_per_letter)]
        test = [_item(k, x, sigma) for x in range(alphabet) for _ in range(test_per_letter)]
        exps.append(Experience(k, f"cipher{k}", train, test))
    return Stream(f"cipher(shared={shared})", "exact", exps, info={"alphabet": alphabet, "shared": shared,
                                                                   "maps": maps})
