#!/usr/bin/env bash
# Throughput table of every task × method on an NVIDIA GPU, in float32 and float64.
#
#   bash benchmarks/gpu_bench.sh            # tables in ${OUT:-bench_out}/
#
# Installs the project with CUDA JAX into a fresh venv (.venv-gpu), following
# JAX's install docs: "jax[cuda13]" for CUDA 13 (NVIDIA driver >= 580), or
# JAX_CUDA=cuda12 for CUDA 12 (driver >= 525). On a machine without network
# whose Python already has CUDA JAX, set PYTHON=python3 to skip the install.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench_out}"
mkdir -p "$out"

if [[ -z "${PYTHON:-}" ]]; then
    python3 -m venv .venv-gpu
    .venv-gpu/bin/pip install --quiet --upgrade pip
    .venv-gpu/bin/pip install --quiet -e . "jax[${JAX_CUDA:-cuda13}]"
    PYTHON=.venv-gpu/bin/python
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # the checkout's code, installed or not

nvidia-smi -L
"$PYTHON" -c 'import jax; print("jax", jax.__version__, jax.devices())'
"$PYTHON" -m stablebptt.cli bench --out "$out/bench_gpu.md"
"$PYTHON" -m stablebptt.cli bench --x64 --out "$out/bench_gpu_x64.md"
