"""Test session set-up: one Keras backend per process (KERAS_BACKEND, default
tensorflow), and torch/keras imported in the order that avoids trap 21."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from resnet_rosetta.frameworks import import_frameworks  # noqa: E402

import_frameworks()


def pytest_report_header(config):  # type: ignore[no-untyped-def]
    return f"KERAS_BACKEND={os.environ['KERAS_BACKEND']}"
