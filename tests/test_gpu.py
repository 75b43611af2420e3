"""GPU paths: the torch side on CUDA (TF32 off) and Keras on its torch backend.

The lent GPU machines have torch with CUDA but no TensorFlow, so the suite must also run with
KERAS_BACKEND=torch. Here (no GPU) the CUDA tests skip with the reason; the torch-backend run and
the refusal of an unavailable device still run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conformance.cases import DIRECTIONS, load_file
from conformance.runner import run_case

ROOT = Path(__file__).resolve().parent.parent
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason=f"no CUDA device (torch {torch.__version__})")


@needs_cuda
@pytest.mark.parametrize("name", ["conv2d.toml", "linear.toml", "batch_norm2d.toml", "max_pool2d.toml"])
def test_cases_pass_with_the_torch_side_on_cuda(name: str) -> None:
    for case in load_file(ROOT / "cases" / name)[:6]:
        for direction in DIRECTIONS:
            result = run_case(case, direction, torch_device="cuda")
            assert result.outcome in ("passed", "divergence"), result.explain()
    assert torch.backends.cuda.matmul.allow_tf32 is False


def test_cli_refuses_a_device_that_is_not_there(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    done = subprocess.run([sys.executable, "-m", "conformance.cli", "run", "--select", "relu", "--torch-device",
                           "cuda", "--output", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "CUDA is not available" in done.stderr


def test_the_suite_runs_on_keras_torch_backend(tmp_path: Path) -> None:
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run([sys.executable, "-m", "conformance.cli", "run", "--select",
                           "relu,linear,max_pool2d[k3-s2,conv2d[o6-k3-s2", "--output", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert '"keras_backend": "torch"' in (tmp_path / "results.json").read_text()
