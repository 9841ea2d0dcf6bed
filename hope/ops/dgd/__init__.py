"""DGD updates of 2-layer residual MLP memories (self-modifying Titans)."""

from hope.ops.dgd.chunk import dgd_memory_chunk, smt_kv_chunk
from hope.ops.dgd.common import MemoryState
from hope.ops.dgd.naive import dgd_memory_naive, smt_kv_naive

__all__ = ["MemoryState", "dgd_memory_chunk", "dgd_memory_naive", "smt_kv_chunk", "smt_kv_naive"]
