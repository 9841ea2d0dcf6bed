"""Run the Triton kernels on CPU through the interpreter; must take effect before ``triton`` is imported."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ["HOPE_KERNELS_NAN_FILL"] = "1"  # kernel outputs start NaN-filled: an unwritten element fails
