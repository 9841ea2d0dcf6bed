"""Functional math of the in-context memories: each op has `naive` (token loop, ground truth) and `chunk`.

Ops:
- ``dgd``: Delta Gradient Descent on 2-layer residual MLP memories (self-modifying Titans, paper Eq. 88-93).
- ``cms``: the chunk-wise summed-gradient update of a Continuum Memory System level (paper Eq. 30-31).
"""


from hope.ops.cms import CMSLevelState, cms_level_chunk, cms_level_naive
from hope.ops.dgd import (
    MemoryState,
    dgd_memory_chunk,
    dgd_memory_naive,
    smt_kv_chunk,
    smt_kv_naive,
)

__all__ = [
    "CMSLevelState",
    "MemoryState",
    "cms_level_chunk",
    "cms_level_naive",
    "dgd_memory_chunk",
    "dgd_memory_naive",
    "smt_kv_chunk",
    "smt_kv_naive",
]
