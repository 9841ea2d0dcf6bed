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
