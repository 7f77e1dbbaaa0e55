"""Trap measurements that start their own Python processes (trap 21, other Keras backends):
they run once, in the TensorFlow session of the suite, not once per backend."""

from __future__ import annotations

import numpy as np

from resnet_rosetta.teaching import traps
from resnet_rosetta.teaching import traps_numerics as num


def test_trap_table_covers_the_reference_numbering() -> None:
    # the reference's traps 1-22; 23 on are timm's layers
    assert set(range(1, 23)) <= set(traps.TRAPS) and all(isinstance(n, int) and n > 0 for n in traps.TRAPS)
    assert all(t.handled_by and t.if_ignored for t in traps.TRAPS.values())


def test_import_order_segfault_in_a_subprocess() -> None:
    v = num.import_order().values
    assert v["tensorflow_first"] == 139  # 128 + SIGSEGV
    assert v["import_frameworks"] == 0


def test_measure_on_another_backend() -> None:
    measured = traps.measure_on("jax", [11])
    assert "Keras on jax" in measured[11].setting
    assert measured[11].values["stored_lr"] == float(np.float32(0.1))
