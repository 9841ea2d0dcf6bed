#!/usr/bin/env bash
# The GPU check of the Triton DGD kernels, in one call that fits in 5 minutes on one H100/H200:
#   bash scripts/gpu_check.sh
# 1. the kernel tests compiled for the GPU (TRITON_INTERPRET=0): every kernel against the chunk backend at odd
#    shapes (outputs, end states, every gradient), and the triton backend's model against the chunk backend's;
# 2. the correctness-gated benchmark (hope.kernels.bench: parity first, then ms and TFLOP/s of the forward and
#    forward+backward of dgd_memory and smt_kv against the PyTorch chunk backend and causal SDPA) at the
#    hope-340m and hope-1.3b shapes, T = 2048 and 4096, bf16 inputs.
# Exits non-zero on the first failure; on a machine without a CUDA GPU it says so and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python}"
export TRITON_INTERPRET=0 HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline
"$py" - <<'PY'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit("gpu_check.sh needs a CUDA GPU (none is visible to torch); on CPU run the kernel tests under the "
             "interpreter: pytest tests/kernels")
import triton

print(f"torch {torch.__version__}, triton {triton.__version__}, {torch.cuda.get_device_name()}", flush=True)
PY
echo "== kernel tests, compiled for the GPU"
timeout 150 "$py" -m pytest -q -x tests/kernels
for seq in 2048 4096; do
  echo "== benchmark at T = $seq"
  timeout 60 "$py" -m hope.kernels.bench --presets hope-340m hope-1.3b --seq "$seq" --dtype bfloat16
done
