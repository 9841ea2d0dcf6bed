"""ContinuumMemorySystem / CMSLevel: update schedule, static cases, and use inside a model that is not HOPE."""

import re
from pathlib import Path

import pytest
import torch

from hope import CMSLevel, ContinuumMemorySystem
from hope.ops.cms import swiglu


def test_level_changes_weights_exactly_after_every_chunk():
    torch.manual_seed(0)
    C = 5
    level = CMSLevel(chunk_size=C, dim=16, hidden=24, step_init=0.5)
    x = torch.randn(2, 23, 16)
    state, prev = None, level.w_up
    for t in range(23):
        _, state = level(x[:, t : t + 1], state)
        changed = not torch.equal(state.w_up.expand(2, -1, -1), prev.expand(2, -1, -1))
        assert changed == ((t + 1) % C == 0), f"token {t}: weights changed={changed}"
        assert state.offset == (t + 1) % C
        prev = state.w_up


def test_zero_step_size_equals_static_mlp_with_the_same_weights():
    torch.manual_seed(0)
    fast = CMSLevel(chunk_size=3, dim=16, hidden=24)
    static = CMSLevel(chunk_size=None, dim=16, hidden=24)
    static.load_state_dict(fast.state_dict(), strict=False)
    with torch.no_grad():
        fast.eta.zero_()
    x = torch.randn(2, 20, 16)
    y_fast, _ = fast(x)
    y_static, state = static(x)
    assert state is None
    torch.testing.assert_close(y_fast, y_static)
    torch.testing.assert_close(y_static, x + swiglu(static.w_gate, static.w_up, static.w_down, static.norm(x)))


def test_static_level_has_no_in_context_parameters():
    level = CMSLevel(chunk_size=None, dim=8)
    assert {n for n, _ in level.named_parameters()} == {"w_gate", "w_up", "w_down", "norm.weight"}
    assert level.init_state() is None


def test_cms_state_and_shape_errors():
    cms = ContinuumMemorySystem(8, [CMSLevel(2), CMSLevel(None)])
    with pytest.raises(ValueError, match="batch, time, 8"):
        cms(torch.randn(2, 3, 9))
    with pytest.raises(ValueError, match="entries for 2 CMS levels"):
        cms(torch.randn(2, 3, 8), state=[None])
    with pytest.raises(ValueError, match="chunk_size"):
        CMSLevel(chunk_size=0)
    with pytest.raises(RuntimeError, match="no dim"):
        CMSLevel(chunk_size=2)(torch.randn(1, 2, 8))


def test_readme_cms_example_runs():
    """The README's example drops CMS into a small non-HOPE model as its FFN and streams a long input in
    several calls (its own asserts check that the calls equal one pass)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"<!-- cms-example -->\s*```python\n(.*?)```", readme, flags=re.S)
    assert len(blocks) == 1, "README must hold exactly one block marked <!-- cms-example -->"
    exec(compile(blocks[0], "README.md:cms-example", "exec"), {})


def test_sum_combine_is_the_sum_of_the_levels_without_norm_or_residual():
    """combine='sum' (independent CMS, paper Eq. 74): every level reads the same input; with norm=False and
    step size 0, an ungated GELU level with biases is exactly W_down gelu(W_up x + b_up) + b_down."""
    torch.manual_seed(0)
    levels = [CMSLevel(3, hidden=12, norm=False, act="gelu_tanh", gated=False, bias=True, step_init=0.0),
              CMSLevel(None, hidden=12, norm=False, act="gelu_tanh", gated=False, bias=True)]
    cms = ContinuumMemorySystem(8, levels, combine="sum")
    assert {n for n, _ in levels[1].named_parameters()} == {"w_up", "w_down", "b_up", "b_down"}
    with torch.no_grad():
        for lvl in levels:
            lvl.b_up.normal_()
            lvl.b_down.normal_()
    x = torch.randn(2, 10, 8)
    y, state = cms(x)
    want = sum(torch.nn.functional.gelu(x @ lvl.w_up.T + lvl.b_up, approximate="tanh") @ lvl.w_down.T + lvl.b_down
               for lvl in levels)
    torch.testing.assert_close(y, want)
    assert state[1] is None and state[0].offset == 10 % 3
    with pytest.raises(ValueError, match="combine"):
        ContinuumMemorySystem(8, [CMSLevel(None)], combine="mean")
    with pytest.raises(ValueError, match="form"):
        levels[0](x, CMSLevel(3, dim=8, hidden=12).init_state())
