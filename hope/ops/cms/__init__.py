"""CMS level update (paper Eq. 30-31): chunk-wise summed gradient step of a SwiGLU MLP."""

from hope.ops.cms.chunk import cms_level_chunk
from hope.ops.cms.common import CMSLevelState, swiglu
from hope.ops.cms.naive import cms_level_naive

__all__ = ["CMSLevelState", "cms_level_chunk", "cms_level_naive", "swiglu"]
