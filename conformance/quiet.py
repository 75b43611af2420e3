"""Keep the frameworks' chatter off the progress line: with the case that caused it, or filtered.

Two sources: what TensorFlow, JAX and absl log through Python's logging while a case runs
(retracing notices, for one), which :func:`capture_framework_logs` keeps with the case; and the
lines TensorFlow's C++ start-up writes straight to file descriptor 2 when it is imported ("oneDNN
custom operations are on", the CPU-feature guard), which ``TF_CPP_MIN_LOG_LEVEL`` no longer stops
in TensorFlow 2.21. :func:`import_frameworks_quietly` imports the frameworks with that descriptor
caught and passes on every line that is not one of those notices. The facts those lines state
are in the results file (:mod:`conformance.facts`).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from .refusal import plain

# TensorFlow's import-time notices: informational, and recorded as facts instead.
_NOTICES = re.compile(r"oneDNN custom operations are on|All log messages before absl::InitializeLog|"
                      r"This TensorFlow binary is optimized to use available CPU instructions|"
                      r"To enable the following instructions:|rebuild TensorFlow with the appropriate compiler flags|"
                      r"Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered|"
                      r"TF-TRT Warning|Could not find cuda drivers")


@contextmanager
def capture_framework_logs() -> Iterator[list[str]]:
    """Keep what TensorFlow, JAX, Keras and absl log through Python's logging during a case."""
    import logging
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(plain(f"{record.name}: {record.getMessage()}").strip())

    handler = Keep(logging.WARNING)
    loggers = [logging.getLogger(name) for name in ("tensorflow", "absl", "jax", "keras")]
    saved = [(logger.handlers[:], logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers = [handler]
        logger.propagate = False
    try:
        yield lines
    finally:
        for logger, (handlers, propagate) in zip(loggers, saved, strict=True):
            logger.handlers, logger.propagate = handlers, propagate


def import_frameworks_quietly() -> None:
    """Import torch, then Keras (and TensorFlow on its backend), keeping TensorFlow's start-up notices off
    the terminal. Every other line written to stderr meanwhile is passed on, so nothing is lost."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:            # no real descriptor 2 (an embedding host): import as is
        import keras  # noqa: F401
        import torch  # noqa: F401
        return
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import keras  # noqa: F401
            import torch  # noqa: F401  (torch before tensorflow)
            if keras.backend.backend() == "tensorflow":
                import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode("utf-8", "replace").splitlines()
                    if line.strip() and not _NOTICES.search(line)]
    if kept:
        print("\n".join(kept), file=sys.stderr)


__all__ = ["capture_framework_logs", "import_frameworks_quietly"]
