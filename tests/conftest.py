"""Shared test settings: a derandomised hypothesis profile for CI, and torch imported before TF."""

from __future__ import annotations

import os

import torch  # noqa: F401  (must be imported before tensorflow)

# isort: split
# Imported here, not first inside a test: pytester's in-process runs restore sys.modules afterwards,
# and a TensorFlow dropped from sys.modules and imported again aborts the process.
import keras  # noqa: F401
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=30, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=30)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

pytest_plugins = ["pytester"]
