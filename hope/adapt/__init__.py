"""Turn a pretrained ``transformers`` causal LM into a HOPE-style continual learner (ad-hoc level stacking).

    from hope.adapt import cmsify
    model = cmsify(AutoModelForCausalLM.from_pretrained(path), levels=[16, 512, None], train="cms")

Each chosen block's MLP becomes a Continuum Memory System whose levels are seeded from it (Behrouz et al.,
Nested Learning, arXiv 2512.24695, section 7.3); at inner step size 0 the converted model is the original.
Importing this package registers the converted classes of the common families with the Auto classes, so a
converted folder loads with ``AutoModelForCausalLM.from_pretrained``. Command line::

    python -m hope.adapt convert SRC_DIR OUT_DIR --levels 16,512,static
"""

from hope.adapt.convert import cmsify, parse_levels
from hope.adapt.hf import CMSCache, adapted_class, register
from hope.adapt.interface import HopeInterface
from hope.adapt.mlp import CMSMLP, AdaptSpec
from hope.adapt.trainable import describe, set_trainable

__all__ = ["AdaptSpec", "CMSCache", "CMSMLP", "HopeInterface", "adapted_class", "cmsify", "describe",
           "parse_levels", "register", "set_trainable"]
