"""Kernel tests: outputs NaN-filled (TRITON_INTERPRET is set for the whole suite in ``tests/conftest.py``)."""

import os

os.environ["HOPE_KERNELS_NAN_FILL"] = "1"  # kernel outputs start NaN-filled: an unwritten element fails
