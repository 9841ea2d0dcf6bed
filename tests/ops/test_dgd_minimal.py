"""hope.ops.dgd.minimal (one readable chunk) against naive and chunk: outputs, end states and gradients."""

import pytest
import torch

from hope.ops.dgd import MemoryState, dgd_memory_chunk, dgd_memory_naive
from hope.ops.dgd.minimal import dgd_chunk, memory_chunk
from tests.ops.test_dgd import B, grads, make_inputs, run


def run_minimal(inp, self_target, act):
    """:func:`tests.ops.test_dgd.run`'s loss for one chunk computed by the minimal reference."""
    state = MemoryState.from_params(inp["w1"], inp["w2"], B, momentum=False)
    o, w1, w2 = memory_chunk(state.w1, state.w2, inp["k"], inp["v"], inp["q"], inp["eta"], inp["alpha"],
                             self_target=self_target, act=act)
    g = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in (o, w1, w2))
    return loss, o, w1, w2


@pytest.mark.parametrize("op", [dgd_memory_naive, dgd_memory_chunk])
@pytest.mark.parametrize("T,chunk", [(11, 11), (13, 13), (7, 16), (1, 4)])  # whole chunks and a partial one
@pytest.mark.parametrize("self_target,act", [(True, "silu"), (False, "silu"), (True, "gelu")])
def test_minimal_matches_the_library_on_one_chunk(op, T, chunk, self_target, act):
    inp = make_inputs(T)
    loss_m, o_m, w1_m, w2_m = run_minimal(inp, self_target, act)
    loss, (o,), st = run(op, inp, chunk, dgd=True, momentum=False, self_target=self_target, act=act)
    torch.testing.assert_close(o, o_m, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(st.w1, w1_m, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(st.w2, w2_m, rtol=1e-4, atol=1e-5)
    assert st.offset == T % chunk
    for name, a, b in zip(inp, grads(loss, inp), grads(loss_m, inp)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=lambda m: f"grad of {name}: {m}")  # noqa: B023


def test_dgd_chunk_is_the_token_recurrence():
    """The triangular solve of :func:`dgd_chunk` equals the per-token rule it documents, for one matrix."""
    g = torch.Generator().manual_seed(0)
    n, m, k = 9, 4, 6
    w, u, y, x = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((m, k), (n, k), (n, m), (n, k)))
    eta = torch.rand(n, generator=g, dtype=torch.float64)
    alpha = 0.7 + 0.3 * torch.rand(n, generator=g, dtype=torch.float64)
    w_end, reads = dgd_chunk(w, u, y, x, eta, alpha)
    wt = w
    for t in range(n):
        step = eta[t] / (1 + eta[t] * u[t] @ u[t])
        wt = alpha[t] * wt - step * torch.outer(wt @ u[t] - y[t], u[t])
        torch.testing.assert_close(reads[t], wt @ x[t])
    torch.testing.assert_close(w_end, wt)
