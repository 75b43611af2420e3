"""One case through a converter under test: build the source side, randomise, convert, run, judge.

The verdicts tell the truth about the converter, not about the frameworks:

- ``passed``: every output within the case's tolerance of the source model's;
- ``failed``: a wrong number or shape that the converter did not complain about (it "succeeded");
  the result carries the worst element, both values and the command that reproduces it;
- ``refused``: the converter raised or declined, or the model it returned would not run;
- ``error``: our adapter or the environment broke (the traceback ends in this package, or the
  converter is not installed);
- ``skipped``: the case cannot judge this converter (a layout-guessing converter on a tensor that
  reads the same in both layouts, or a pair that cannot be built here), with the reason.

Known divergences recorded in the case files describe the frameworks (a TensorFlow kernel that is
wrong on this machine, say), not a converter. A converter whose output differs where such a record
applies gets ``divergence``, with the record, as our own run does: its target framework's kernel may
be to blame, not the converter. Where it agrees, it passes (it may avoid that kernel). Recorded
refusals (``[[unsupported]]``) do not apply. The float64 reference says which side moved, where a
family has one.
"""

from __future__ import annotations

import math
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..cases import Case
from ..errors import ConformanceError, UnsupportedError
from ..quiet import capture_framework_logs
from ..refusal import plain
from ..runner import CaseResult, _distance, on_device, pair_for, reference_outputs, weight_seed
from . import Converter, ConverterError, Refused, get

_PACKAGE = str(Path(__file__).resolve().parent.parent)


@dataclass
class PeerCaseResult(CaseResult):
    """A case judged through a converter under test: the result of :class:`CaseResult`, with the
    converter's name and a reproduction command that names it."""

    converter: str = ""

    def reproducer(self) -> str:
        return (f'conformance run --converter {self.converter} --select "{self.id}"\n'
                f'pytest "{self.file}::{self.id}::{self.direction}" --conformance-converter {self.converter}')


def run_peer(case: Case, direction: str, name: str, torch_device: str = "cpu") -> PeerCaseResult:
    """Run one case through converter ``name`` and judge it. Never raises for a problem with the case."""
    result = PeerCaseResult(case.id, case.family, direction, dict(case.params), "error", case.seed, case.file,
                            tier=case.tier, converter=name)
    started = time.perf_counter()
    with capture_framework_logs() as logged:
        try:
            adapter = get(name)
            why_not = adapter.available()
            if why_not:
                raise ConverterError(f"converter {name} cannot run here: {why_not}")
            if direction not in adapter.directions:
                result.outcome, result.message = "skipped", f"{name} does not convert {direction}"
            else:
                _convert_and_judge(case, direction, adapter, result, torch_device)
        except ConformanceError as exc:
            result.outcome, result.message = "error", plain(f"{type(exc).__name__}: {exc}")
        except Exception as exc:     # our own adapter broke: never the converter's verdict
            result.outcome, result.message = "error", plain(_where(exc))
    result.timings["total"] = time.perf_counter() - started
    result.log = sorted(set(logged))[:20]
    return result


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {str(exc)[:600]}{where}"


def _ours(exc: BaseException) -> bool:
    """Whether the exception was raised by this package's code rather than by the converter's."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(_PACKAGE)


def _move(array: np.ndarray, to_last: bool) -> np.ndarray:
    """Float maps change layout; integer inputs (indices, masks) never do."""
    from ..comparison import _move_channels
    return _move_channels(array, to_last) if array.dtype.kind == "f" else array


def _ambiguous(shape: tuple[int, ...]) -> bool:
    """A tensor that reads the same channels-first and channels-last (C equal to every spatial size)."""
    return len(shape) >= 3 and (*shape[2:], shape[1]) == tuple(shape[1:])


def _flatten(value: Any) -> list[np.ndarray]:
    from ..comparison import _flatten_outputs
    return [np.asarray(a) for a in _flatten_outputs(value)]


def _source_outputs(pair: Any, source_is_torch: bool, arrays: list[np.ndarray], device: str) -> list[np.ndarray]:
    if source_is_torch:
        import torch
        pair.torch.eval()
        with torch.no_grad():
            out = pair.torch(*[torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays])
        return _flatten(out)
    return _flatten(pair.keras(arrays[0] if len(arrays) == 1 else arrays, training=False))


def _framework_record(case: Case, direction: str, torch_device: str) -> Any:
    """The recorded divergence of the frameworks that applies to this case here, if any (not refusals)."""
    from ..facts import scope_facts
    from ..runner import installed_versions
    side = "torch->keras" if direction.startswith("torch->") else "keras->torch"
    record = case.record_for(side, installed_versions(), scope_facts(torch_device))
    return record if record is not None and record.kind != "unsupported" else None


def _convert_and_judge(case: Case, direction: str, adapter: Converter, result: PeerCaseResult,
                       torch_device: str) -> None:
    from ..comparison import _combine, compare_arrays
    from ..pair import randomize_keras, randomize_torch
    from ..runner import _fresh_keras_names
    from . import Context

    clock = time.perf_counter()
    try:
        pair, _ = pair_for(case)
    except UnsupportedError as exc:
        result.outcome, result.message = "skipped", plain(f"the pair cannot be built here: {exc}")
        return
    on_device(pair.torch, torch_device)
    result.timings["build"] = time.perf_counter() - clock
    source_is_torch = direction.startswith("torch->")
    # The same weights as the built-in path's run of this case and direction.
    if source_is_torch:
        randomize_torch(pair.torch, weight_seed(case, direction))
    else:
        randomize_keras(pair.keras, weight_seed(case, direction))
    spatial = bool(pair.channels_last)
    source_last = spatial and not source_is_torch
    torch_layout = [a.astype(np.float32) if a.dtype.kind == "f" else a for a in pair.sample_inputs(case.seed,
                                                                                                    case.batch)]
    inputs = [_move(a, True) if source_last else a for a in torch_layout]
    expected = _source_outputs(pair, source_is_torch, inputs, torch_device)

    guessing = "guess" in (adapter.input_layout, adapter.output_layout)
    if guessing:
        shapes = [a.shape for a in inputs if a.dtype.kind == "f"] + [e.shape for e in expected]
        if any(_ambiguous(tuple(s)) for s in shapes):
            result.outcome = "skipped"
            result.message = (f"{adapter.name} guesses layouts, and a tensor of shape "
                              f"{next(tuple(s) for s in shapes if _ambiguous(tuple(s)))} reads the same channels-first "
                              "and channels-last: its outputs cannot be told right from transposed")
            return

    def target_last(layout: str) -> bool:
        if layout == "source":
            return source_last
        return layout in ("channels_last", "guess") and spatial

    with tempfile.TemporaryDirectory(prefix="conformance-peer-") as scratch:
        context = Context(pair, direction, Path(scratch), case.id)
        source = pair.torch if source_is_torch else pair.keras
        clock = time.perf_counter()
        try:
            with _fresh_keras_names():
                target = adapter.convert(source, [a.copy() for a in inputs], context)
        except Refused as exc:
            result.outcome, result.message = "refused", plain(f"{adapter.name} declined: {exc}")
            return
        except Exception as exc:
            if _ours(exc):
                raise
            result.outcome, result.message = "refused", plain(f"{adapter.name} raised: {_where(exc)}")
            return
        finally:
            result.timings["convert"] = time.perf_counter() - clock
            result.timings.update(context.timings)
        target_inputs = [_move(a, target_last(adapter.input_layout)) if source_last != target_last(
            adapter.input_layout) else a for a in inputs]
        clock = time.perf_counter()
        try:
            got = _flatten(target(*target_inputs))
        except Refused as exc:       # an adapter whose converter runs elsewhere reports the run's exception so
            result.outcome = "refused"
            result.message = plain(f"{adapter.name} converted the model, but the result raised when run: {exc}")
            return
        except Exception as exc:
            if _ours(exc):
                raise
            result.outcome = "refused"
            result.message = plain(f"{adapter.name} converted the model, but the result raised when run: {_where(exc)}")
            return
        result.timings["run"] = time.perf_counter() - clock
    result.warnings = sorted(set(context.notes))[:20]

    tolerance = case.tolerance or pair.family.tolerance(pair.params)
    result.tolerance = {"atol": tolerance.atol, "rtol": tolerance.rtol, "reason": tolerance.reason}
    if len(got) != len(expected):
        result.outcome = "failed"
        result.message = f"the converted model returned {len(got)} outputs, the source model {len(expected)}"
        return
    parts = []
    out_last = target_last(adapter.output_layout)
    for e, g in zip(expected, got, strict=True):
        g = np.asarray(g)
        if adapter.output_layout == "guess" and g.ndim >= 3:
            if g.shape != e.shape and g.shape == _move(e, not source_last).shape:
                g = _move(g, source_last)
        elif g.ndim >= 3 and g.ndim == len(inputs[0].shape) and out_last != source_last:
            g = _move(g, source_last)
        parts.append(compare_arrays(e, g.astype(e.dtype) if g.dtype.kind == "f" else g, tolerance))
    comparison = parts[0] if len(parts) == 1 else _combine(parts)
    result.max_abs_error, result.max_rel_error = comparison.max_abs_error, comparison.max_rel_error
    result.allowed_error, result.headroom = comparison.allowed_error, comparison.headroom
    if comparison.worst_index is not None:
        # compare_arrays took the source as its reference (torch_value) and the converted model's output second
        source_value, target_value = comparison.torch_value, comparison.keras_value
        result.worst = {"index": list(comparison.worst_index), "output": comparison.output,
                        "torch": source_value if source_is_torch else target_value,
                        "keras": target_value if source_is_torch else source_value}
        if direction.endswith("tflite"):
            result.worst["tflite"] = target_value
    passed = comparison.passed and not comparison.problem
    result.outcome = "passed" if passed else "failed"
    if not passed:
        result.message = (comparison.problem or
                          f"{adapter.name} converted without complaint, but the outputs differ: max abs error "
                          f"{comparison.max_abs_error:.3g}, headroom {comparison.headroom:.3g}")
        record = _framework_record(case, direction, torch_device)
        if record is not None:
            result.outcome, result.divergence = "divergence", record.to_json()
            result.message += f"\n  where the frameworks themselves diverge (recorded in {case.file}): {record.reason}"
    if pair.family.reference is not None and source_is_torch:
        reference_list = reference_outputs(pair, torch_layout)
        got_list = comparison.keras_outputs or [o for o in (comparison.keras_output,) if o is not None]
        result.reference_error = {
            "torch": max(_distance(a, r) for a, r in zip(expected, reference_list, strict=False)),
            "keras": max((_distance(a, r) for a, r in zip(got_list, reference_list, strict=False)
                          if a is not None), default=math.inf),
        }


__all__ = ["PeerCaseResult", "run_peer"]
