#!/usr/bin/env bash
# Fetch, on this machine, the wheels that a lent GPU machine lacks: Keras 3 and its pure-Python
# needs (the GPU machines have torch with CUDA and Python 3.12, but no TensorFlow or Keras, and no
# network). The suite then runs there on Keras's torch backend; see scripts/gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl \
  keras==3.15.1 absl-py namex optree ml-dtypes h5py rich markdown-it-py mdurl pygments packaging hypothesis \
  pytest pluggy iniconfig attrs sortedcontainers
du -sh .whl
