"""Image classification data sets that work offline, as NCHW numpy arrays.

- "digits": scikit-learn's 1,797 handwritten digits (shipped inside the package),
  8x8 pixels upsampled to 32x32 by pixel repetition, one or three channels, with a
  fixed 80/20 train/test split.
- CIFAR-10 and CIFAR-100 from the official BINARY version (cifar-10-binary.tar.gz,
  cifar-100-binary.tar.gz, unpacked), read with numpy: no pickle. Every file's size,
  record count and labels are checked; a missing, truncated or foreign file is one
  DataError naming it.

Images stay uint8 in memory (CIFAR-10 train: 150 MB instead of 600 MB of float32);
`Dataset.prepare` scales and normalises a batch with the training set's per-channel
mean and standard deviation, so both frameworks receive identical float32 batches.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from shared_specs.errors import DataError
from shared_specs.training import Augment

T = TypeVar("T")
DIGITS_SPLIT_SEED = 0  # the fixed permutation behind the digits train/test split
DIGITS_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class CifarFormat:
    """One CIFAR binary layout: each record is `label_bytes` label bytes then a 3x32x32
    uint8 image (channel-major: 1024 red, 1024 green, 1024 blue, rows top to bottom)."""

    name: str
    folder: str  # the folder the official archive unpacks to
    train_files: tuple[str, ...]
    test_file: str
    records_per_file: dict[str, int]
    label_bytes: int
    label_index: int  # which label byte is the class (CIFAR-100: 1, the fine label)
    num_classes: tuple[int, ...]  # the range of every label byte
    names_file: str

    @property
    def record_size(self) -> int:
        return self.label_bytes + 3 * 32 * 32


CIFAR10 = CifarFormat(
    name="cifar10", folder="cifar-10-batches-bin",
    train_files=tuple(f"data_batch_{i}.bin" for i in range(1, 6)), test_file="test_batch.bin",
    records_per_file={**{f"data_batch_{i}.bin": 10000 for i in range(1, 6)}, "test_batch.bin": 10000},
    label_bytes=1, label_index=0, num_classes=(10,), names_file="batches.meta.txt")
CIFAR100 = CifarFormat(
    name="cifar100", folder="cifar-100-binary", train_files=("train.bin",), test_file="test.bin",
    records_per_file={"train.bin": 50000, "test.bin": 10000},
    label_bytes=2, label_index=1, num_classes=(20, 100), names_file="fine_label_names.txt")


@dataclass(frozen=True)
class Dataset:
    """Train and test splits as uint8 NCHW images and int64 labels."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    scale: float  # the maximum raw value: 255, or 16 for digits
    mean: np.ndarray  # per channel, of the scaled training images
    std: np.ndarray
    augment: Augment | None  # the augmentation customary for this data
    class_names: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """float32 batch: scaled to [0, 1], minus the training mean, over the training std."""
        x = images.astype(np.float32) / np.float32(self.scale)
        return (x - self.mean[:, None, None]) / self.std[:, None, None]

    def describe(self) -> str:
        return (f"{self.name}: {len(self.train_labels)} train / {len(self.test_labels)} test images, "
                f"{self.channels}x{self.train_images.shape[2]}x{self.train_images.shape[3]}, "
                f"{self.num_classes} classes")


def load_dataset(source: str | os.PathLike[str], *, channels: int | None = None,
                 cifar_formats: tuple[CifarFormat, ...] = (CIFAR10, CIFAR100)) -> Dataset:
    """"digits", or a directory holding CIFAR-10 or CIFAR-100 binary files (or the folder
    the official archive unpacks to). `channels` (1 or 3) applies to digits only."""
    if str(source) == "digits":
        return load_digits(3 if channels is None else channels)
    if channels not in (None, 3):
        raise DataError(f"--channels {channels} applies to digits only: CIFAR images have 3 channels")
    root = Path(source)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory (use 'digits', or a directory with CIFAR binary files)")
    for fmt in cifar_formats:
        for folder in (root, root / fmt.folder):
            if (folder / fmt.test_file).exists() or (folder / fmt.train_files[0]).exists():
                return load_cifar(folder, fmt)
    wanted = " or ".join(f"{f.name} ({f.train_files[0]}, {f.test_file})" for f in cifar_formats)
    raise DataError(f"{root}: holds no CIFAR binary files; expected {wanted}, from the 'binary version' archives")


def load_digits(channels: int = 3) -> Dataset:
    """scikit-learn's digits at 32x32, `channels` copies of the gray image."""
    if channels not in (1, 3):
        raise DataError(f"digits come with 1 or 3 channels, got {channels}")
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.repeat(np.repeat(bunch.images.astype(np.uint8), 4, axis=1), 4, axis=2)  # 8x8 -> 32x32
    images = np.repeat(images[:, None], channels, axis=1)
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(labels))
    n_test = int(round(DIGITS_TEST_FRACTION * len(labels)))
    test, train = order[:n_test], order[n_test:]
    return _dataset("digits", images[train], labels[train], images[test], labels[test], 10, 16.0, None,
                    tuple(str(i) for i in range(10)))


def load_cifar(folder: str | os.PathLike[str], fmt: CifarFormat) -> Dataset:
    """One CIFAR data set from its binary files in `folder`, every file validated first."""
    folder = Path(folder)
    missing = [f for f in (*fmt.train_files, fmt.test_file) if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{folder}: {fmt.name} is incomplete, missing {', '.join(missing)}")
    train = [read_cifar_file(folder / f, fmt) for f in fmt.train_files]
    test_images, test_labels = read_cifar_file(folder / fmt.test_file, fmt)
    names: tuple[str, ...] = ()
    if (folder / fmt.names_file).is_file():
        names = tuple(n.strip() for n in (folder / fmt.names_file).read_text().splitlines() if n.strip())
    return _dataset(fmt.name, np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]),
                    test_images, test_labels, fmt.num_classes[fmt.label_index], 255.0, Augment(), names)


def read_cifar_file(path: Path, fmt: CifarFormat) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images N x 3 x 32 x 32, int64 labels) of one binary file, or a DataError."""
    size = path.stat().st_size
    expected = fmt.records_per_file[path.name]
    with path.open("rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80" and size % fmt.record_size:
        raise DataError(f"{path}: a Python pickle, i.e. the 'python version' of {fmt.name}; "
                        "use the 'binary version' archive (no pickle is read here)")
    if size != expected * fmt.record_size:
        whole = "" if size % fmt.record_size else f" ({size // fmt.record_size} records)"
        raise DataError(f"{path}: {size} bytes{whole}, but a {fmt.name} file of {expected} records of "
                        f"{fmt.record_size} bytes has {expected * fmt.record_size}: truncated or not {fmt.name} binary")
    records = np.fromfile(path, dtype=np.uint8).reshape(expected, fmt.record_size)
    for i, n in enumerate(fmt.num_classes):
        bad = np.flatnonzero(records[:, i] >= n)
        if bad.size:
            raise DataError(f"{path}: record {bad[0]} has label byte {i} = {records[bad[0], i]}, outside 0..{n - 1} "
                            f"({bad.size} such records): corrupted, or not {fmt.name}")
    images = records[:, fmt.label_bytes :].reshape(expected, 3, 32, 32)
    return np.ascontiguousarray(images), records[:, fmt.label_index].astype(np.int64)


def _dataset(name: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
             num_classes: int, scale: float, augment: Augment | None, names: tuple[str, ...]) -> Dataset:
    # per-channel histograms of the uint8 values give exact moments without a float copy
    values = np.arange(256, dtype=np.float64) / scale
    hist = np.stack([np.bincount(train_x[:, c].ravel(), minlength=256) for c in range(train_x.shape[1])])
    mean = hist @ values / hist.sum(axis=1)
    std = np.sqrt(np.maximum(hist @ values**2 / hist.sum(axis=1) - mean**2, 1e-12))
    return Dataset(name, train_x, train_y, test_x, test_y, num_classes, scale, mean.astype(np.float32),
                   std.astype(np.float32), augment, names)


class Prefetch:
    """Iterate `batches` made `depth` ahead by a background thread, counting how long the
    consumer waited for them (`waited`, seconds).

    The batch pipeline (numpy indexing, augmentation, normalisation) then runs while the
    framework computes the previous step, and `waited` says whether it kept up: ~0 when
    the step is the bottleneck, which `train` prints per epoch beside the step time.
    The order of batches is the iterable's: one thread makes them, in turn.
    """

    def __init__(self, batches: Iterable[T], depth: int = 2) -> None:
        self.waited = 0.0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(iter(batches),), daemon=True)
        self._thread.start()

    def _fill(self, source: Iterator[T]) -> None:
        try:
            for item in source:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as err:  # handed to the consumer, raised there
            self._put(_Failed(err))

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        try:
            while True:
                began = time.perf_counter()
                item = self._queue.get()
                self.waited += time.perf_counter() - began
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            self._stop.set()  # a consumer that stops early (an error in a step) releases the thread


_END = object()


@dataclass(frozen=True)
class _Failed:
    error: BaseException
