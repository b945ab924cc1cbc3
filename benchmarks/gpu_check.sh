#!/usr/bin/env bash
# The GPU check in one command, for a machine with a CUDA build of PyTorch (TensorFlow not needed).
#
# Before, on a machine with TensorFlow (the exports are not committed: 54 MiB):
#     python benchmarks/bench_gpu.py export          # writes benchmarks/gpu_assets/
# Then on the GPU machine, from the repository root (carry benchmarks/gpu_assets along):
#     bash benchmarks/gpu_check.sh                   # PYTHON=... to pick the interpreter
#
# Prints the GPU and driver, checks the torch runtime against the Keras model's exported outputs on
# the CPU and each GPU (float32 must be within rel L2 1e-4; tf32/float16/bfloat16 errors printed),
# then the GPU-vs-CPU table (bench_gpu.py's docstring). Runs the pytest GPU tests too where pytest
# and TensorFlow are installed. Exits non-zero when a check fails. The table's rows go to
# $OUT/gpu_rows.json (or /tmp).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || echo "nvidia-smi: not found"
"$PY" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| GPU visible:', torch.cuda.is_available())"
rc=0
"$PY" benchmarks/bench_gpu.py all --json "${OUT:-/tmp}/gpu_rows.json" "$@" || rc=$?
if "$PY" -c "import pytest, tensorflow, lazy_loader, av" 2>/dev/null; then
    PYTHONPATH=src "$PY" -m pytest tests/core/test_torch_runtime.py -q -p no:cacheprovider || rc=$?
else
    echo "pytest GPU tests not run here (they need pytest and TensorFlow); the check above compared the GPU with Keras' exported outputs"
fi
exit $rc
