"""Where a canonical (PyTorch-layout) tensor's axes go in Keras: the one home of the
transposes that traps 1-3 are about. resnet_keras's weight RULES, the naive ports
and the per-layer diff all read them from here."""

from __future__ import annotations

import numpy as np

# conv kernel: PyTorch (out, in/groups, kH, kW) <-> Keras (kH, kW, in/groups, out)  (traps 1, 3)
CONV_TO_KERAS = (2, 3, 1, 0)
CONV_FROM_KERAS = (3, 2, 0, 1)


def conv_to_keras(w: np.ndarray) -> np.ndarray:
    return w.transpose(CONV_TO_KERAS)


def conv_from_keras(k: np.ndarray) -> np.ndarray:
    return k.transpose(CONV_FROM_KERAS)


def dense_to_keras(w: np.ndarray) -> np.ndarray:
    """PyTorch Linear (out, in) -> Keras Dense (in, out) (trap 2)."""
    return w.T


def dense_from_keras(k: np.ndarray) -> np.ndarray:
    return k.T


def conv1d_to_keras(w: np.ndarray) -> np.ndarray:
    """PyTorch Conv1d (out, in, k) -> Keras Conv1D (k, in, out): ECA's kernel."""
    return w.transpose(2, 1, 0)


def conv1d_from_keras(k: np.ndarray) -> np.ndarray:
    return k.transpose(2, 1, 0)
