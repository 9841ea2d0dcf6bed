"""The modelling choices of docs/semantics.md ("The SMT update rule") as switches: each off-setting of
``damping``, ``unit_target`` and ``velocity_decay`` matches between ``chunk`` (analytic backward) and
``naive`` (autograd through the token loop) in outputs, end states and every gradient, streamed or not."""

import pytest
import torch

from hope.kernels.dgd.op import TRITON_STEP
from hope.ops.dgd import MemoryState, dgd_memory_chunk, dgd_memory_naive, smt_kv_chunk, smt_kv_naive
from tests.ops.test_dgd import B, grads, make_inputs, run

OFF = [dict(damping=False), dict(unit_target=False), dict(velocity_decay=False),
       dict(damping=False, unit_target=False, velocity_decay=False)]


def _check(chunk_op, naive_op, inp, chunk, splits, flags, momentum=True):
    loss_n, out_n, st_n = run(naive_op, inp, chunk, True, momentum, splits=splits, anchors=True, **flags)
    loss_c, out_c, st_c = run(chunk_op, inp, chunk, True, momentum, splits=splits, anchors=True, **flags)
    for a, b in zip(out_c, out_n):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for name in ("w1", "w2", "v1", "v2", "a1", "a2"):
        if getattr(st_n, name) is not None:
            torch.testing.assert_close(getattr(st_c, name), getattr(st_n, name), rtol=1e-4, atol=1e-4,
                                       msg=lambda m: f"end state {name}: {m}")  # noqa: B023
    for name, gc, gn in zip(inp, grads(loss_c, inp), grads(loss_n, inp)):
        torch.testing.assert_close(gc, gn, rtol=1e-3, atol=1e-3, msg=lambda m: f"grad of {name}: {m}")  # noqa: B023


@pytest.mark.parametrize("flags", OFF, ids=lambda f: ",".join(f))
@pytest.mark.parametrize("T,chunk,splits", [(37, 8, ()), (23, 5, (3, 11)), (9, 16, ())])
def test_memory_choices_chunk_matches_naive(flags, T, chunk, splits):
    _check(dgd_memory_chunk, dgd_memory_naive, make_inputs(T), chunk, splits, flags)


@pytest.mark.parametrize("flags", OFF[:3], ids=lambda f: ",".join(f))  # all off: M_k, M_v reach 1e10 here
@pytest.mark.parametrize("T,chunk,splits", [(37, 8, ()), (23, 5, (3, 11))])
def test_kv_choices_chunk_matches_naive(flags, T, chunk, splits):
    _check(smt_kv_chunk, smt_kv_naive, make_inputs(T, n_mem=2), chunk, splits, flags)


@pytest.mark.parametrize("flags", OFF[:3], ids=lambda f: ",".join(f))
def test_choices_gradcheck_float64(flags):
    """Finite differences on the chunk ops' hand-written backward with each choice off (partial last chunk)."""
    for n_mem, op in ((None, dgd_memory_chunk), (2, smt_kv_chunk)):
        inp = make_inputs(7, dtype=torch.float64, n_mem=n_mem)
        names = list(inp)

        def f(*args, op=op, names=names):
            return run(op, dict(zip(names, args)), 3, True, True, anchors=True, **flags)[0]

        assert torch.autograd.gradcheck(f, tuple(inp.values()), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("flags", OFF[:3], ids=lambda f: ",".join(f))
def test_each_choice_changes_the_results(flags):
    inp = make_inputs(20)
    base = run(dgd_memory_chunk, inp, 4, True, True)[1][0]
    other = run(dgd_memory_chunk, inp, 4, True, True, **flags)[1][0]
    assert not torch.allclose(base, other, atol=1e-4)


def test_velocity_without_decay_is_the_sum_of_steps():
    """With chunk size 1 and ``velocity_decay=False`` the velocity after one token is ``W_1 - alpha W_0``
    (the step only); with the default it is ``W_1 - W_0`` (the step and the retention decay)."""
    inp = make_inputs(1)
    w1 = inp["w1"].detach().expand(B, *inp["w1"].shape)
    alpha = inp["alpha"].detach()[..., 0, None, None]
    for decay in (True, False):
        _, _, st = run(dgd_memory_naive, inp, 1, True, True, velocity_decay=decay)
        expected = st.w1 - (w1 if decay else alpha * w1)
        torch.testing.assert_close(st.v1, expected, rtol=1e-6, atol=1e-6)


def test_triton_step_refuses_velocity_without_decay():
    """The Triton linear step does not return the step sums: a clear error, never a silent fallback."""
    inp = make_inputs(5)
    state = MemoryState.from_params(inp["w1"], inp["w2"], B, True)
    with pytest.raises(ValueError, match="velocity_decay=False"):
        dgd_memory_chunk(inp["k"], inp["v"], inp["q"], inp["eta"], inp["alpha"], inp["beta"], state, chunk_size=4,
                         velocity_decay=False, step=TRITON_STEP)
