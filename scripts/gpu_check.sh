#!/usr/bin/env bash
# The device check for a lent GPU machine (run it with the device tool, carry=[".whl"], after
# scripts/gpu_wheels.sh). It installs the carried wheels, then runs the catalogue and the GPU tests
# with the torch side on CUDA (TF32 off) and Keras on its torch backend, and writes what it
# measured under $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD || exit 1
export KERAS_BACKEND=torch PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -rs 2>&1 | tee "$OUT/gpu-tests.log"
time python3 -m conformance.cli run --torch-device cuda --output "$OUT/cuda" 2>&1 | tail -5 | tee "$OUT/cuda-run.log"
