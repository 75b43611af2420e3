"""The transfer's writes with another revision's fastcopy.py against this one's, interleaved.

Why: on a shared machine the load changes from one minute to the next, so "before" and "after"
measured in separate runs differ by as much as the change. Here both run in one process, round
by round, on the same planned writes of benchmarks/transfer_ratio.py's three stacks, and the
best of each is divided by a memcpy of the same bytes timed in the same rounds.
Run: git show main:conformance/fastcopy.py > /tmp/old_fastcopy.py
     python benchmarks/writes_before_after.py /tmp/old_fastcopy.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch  # torch before TensorFlow: the other order has crashed

# isort: split
from conformance import fastcopy, transfer

sys.path.insert(0, str(Path(__file__).parent))
import transfer_ratio  # noqa: E402


def load(path: str) -> Any:
    """The other revision's module, importing this package's layout.py in place of its relative import."""
    text = Path(path).read_text().replace("from .layout import", "from conformance.layout import")
    text = text.replace("from . import", "from conformance import").replace("from .facts", "from conformance.facts")
    spec = importlib.util.spec_from_loader("old_fastcopy", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(text, path, "exec"), module.__dict__)   # noqa: S102 (a file the user names, like any script)
    return module


def writes(planned: list[Any], write: Callable[[Any, Any, Any], None]) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            for one in planned:
                write(one.destination, one.source, one.plan)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="another revision's conformance/fastcopy.py")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    old = load(args.old)
    print(transfer_ratio.machine_line())
    stacks = [("dense stack", transfer_ratio.dense_stack()), ("conv stack", transfer_ratio.conv_stack()),
              ("flatten->dense (VGG)", transfer_ratio.flatten_dense())]
    for name, (torch_model, keras_model) in stacks:
        tensors = [p.detach().numpy() for p in torch_model.state_dict().values()]
        targets = [np.empty_like(t) for t in tensors]

        def memcpy(tensors: list[np.ndarray] = tensors, targets: list[np.ndarray] = targets) -> None:
            for src, dst in zip(tensors, targets, strict=True):
                np.copyto(dst, src)

        forward, _, _ = transfer._plan(torch_model, keras_model, True)
        backward, _, _ = transfer._plan(torch_model, keras_model, False)
        runs = {"memcpy": memcpy,
                "before torch->keras": writes(forward, old.write_keras),
                "after torch->keras": writes(forward, fastcopy.write_keras),
                "before keras->torch": writes(backward, old.write_torch),
                "after keras->torch": writes(backward, fastcopy.write_torch)}
        best = transfer_ratio.interleaved_best(runs, args.repeat)
        copy = best["memcpy"]
        print(f"{name} ({sum(t.nbytes for t in tensors) / 1e6:.0f} MB, memcpy {copy * 1e3:.1f} ms): "
              + "; ".join(f"{key} {v / copy:.2f}x" for key, v in best.items() if key != "memcpy"))


if __name__ == "__main__":
    main()
