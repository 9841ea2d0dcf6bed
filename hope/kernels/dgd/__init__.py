"""Chunked DGD on MLP memories: Triton forward/backward kernels of the per-chunk linear-map recurrence."""
