"""Test session set-up: one Keras backend per process (KERAS_BACKEND, default
tensorflow), and torch/keras imported in the order that avoids trap 21.

Markers (see also pyproject.toml):
- keras_backend: the test's outcome depends on the Keras backend; `make test` runs the
  whole suite on TensorFlow, then only these tests on JAX and on torch.
- only_on(*backends): a fact about those backends alone (float64 end to end on
  TensorFlow, a limit of the torch backend's tracer); deselected, not skipped, in a
  process running another backend, so that a skip in the report always means
  something is missing.
"""

import gc
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from resnet_rosetta.frameworks import import_frameworks  # noqa: E402

import_frameworks()


def pytest_configure(config):  # type: ignore[no-untyped-def]
    config.addinivalue_line("markers", "only_on(*backends): runs only under these Keras backends, deselected elsewhere")


def pytest_report_header(config):  # type: ignore[no-untyped-def]
    return f"KERAS_BACKEND={os.environ['KERAS_BACKEND']}"


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    backend = os.environ["KERAS_BACKEND"]
    keep, drop = [], []
    for item in items:
        marks = list(item.iter_markers("only_on"))
        (keep if all(backend in mark.args for mark in marks) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: leave collection to Python
        return 0


_HELD_AFTER_COLLECTING = [0]


def pytest_runtest_teardown(item, nextitem):  # type: ignore[no-untyped-def]
    # Keras models are reference cycles (layers <-> nodes <-> model), freed only by Python's rare
    # full collection, and the largest presets hold gigabytes of weights in each framework: a
    # worker would pile up several finished tests' models (one was OOM-killed at 6 GB). Collect
    # once the worker holds 1.5 GB more than after the last collection: a full collection costs
    # ~0.5 s, so it runs after the big tests only, never after each small one.
    if _resident_bytes() > _HELD_AFTER_COLLECTING[0] + 1.5 * 2**30:
        gc.collect()
        _HELD_AFTER_COLLECTING[0] = _resident_bytes()
