"""Offline data sets: scikit-learn digits, and CIFAR binary files written here in the
official layout (https://www.cs.toronto.edu/~kriz/cifar.html, "binary version")."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from resnet_rosetta.training.data import CIFAR10, CIFAR100, CifarFormat, load_dataset, read_cifar_file
from shared_specs.errors import CheckpointError, DataError

# The official files hold 10,000 (CIFAR-10) or 50,000 records; these tests write a few.
SMALL10 = dataclasses.replace(CIFAR10, records_per_file={**dict.fromkeys(CIFAR10.records_per_file, 3)})
SMALL100 = dataclasses.replace(CIFAR100, records_per_file={"train.bin": 5, "test.bin": 2})


def _records(n: int, fmt: CifarFormat, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """n records in the official layout: label byte(s), then 1024 red, 1024 green, 1024 blue."""
    rng = np.random.default_rng(seed)
    labels = np.stack([rng.integers(0, k, n) for k in fmt.num_classes], axis=1).astype(np.uint8)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    blob = b"".join(labels[i].tobytes() + images[i].tobytes() for i in range(n))
    return blob, images, labels[:, fmt.label_index].astype(np.int64)


def _write_set(folder: Path, fmt: CifarFormat) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for seed, name in enumerate((*fmt.train_files, fmt.test_file)):
        blob, images, labels = _records(fmt.records_per_file[name], fmt, seed)
        (folder / name).write_bytes(blob)
        written[name] = (images, labels)
    return written


def test_digits_split_and_layout() -> None:
    data = load_dataset("digits")
    assert (data.name, data.num_classes, data.channels) == ("digits", 10, 3)
    assert data.train_images.shape == (1438, 3, 32, 32) and data.test_images.shape == (359, 3, 32, 32)
    assert data.train_images.max() == 16 and data.train_images.dtype == np.uint8
    # 8x8 upsampled by repetition: every 4x4 cell is constant, the channels are copies
    cells = data.train_images[:, 0].reshape(-1, 8, 4, 8, 4)
    assert (cells == cells[:, :, :1, :, :1]).all()
    assert (data.train_images == data.train_images[:, :1]).all()
    assert set(data.test_labels) == set(range(10))
    again = load_dataset("digits", channels=1)
    assert again.channels == 1 and np.array_equal(again.test_labels, data.test_labels)  # a fixed split
    x = data.prepare(data.train_images)
    assert x.dtype == np.float32
    # normalised by the training set's own statistics: numpy sums the 1.5M float32 values per
    # channel pairwise, with an error below log2(n) * 2^-24 ~ 1.3e-6 of their magnitude in any
    # order, so 1e-5 holds on any CPU; a wrong mean or std is off by 1e-2 or more
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1, rtol=1e-5)
    with pytest.raises(DataError, match="digits come with 1 or 3 channels, got 2"):
        load_dataset("digits", channels=2)


@pytest.mark.parametrize("fmt, nested", [(SMALL10, False), (SMALL10, True), (SMALL100, True)])
def test_cifar_binary_layout(tmp_path: Path, fmt: CifarFormat, nested: bool) -> None:
    written = _write_set(tmp_path / fmt.folder if nested else tmp_path, fmt)
    (tmp_path / fmt.folder if nested else tmp_path).joinpath(fmt.names_file).write_text("a\nb\n")
    data = load_dataset(tmp_path, cifar_formats=(SMALL10, SMALL100))
    assert data.name == fmt.name and data.num_classes == fmt.num_classes[fmt.label_index]
    assert np.array_equal(data.train_images, np.concatenate([written[f][0] for f in fmt.train_files]))
    assert np.array_equal(data.train_labels, np.concatenate([written[f][1] for f in fmt.train_files]))
    assert np.array_equal(data.test_images, written[fmt.test_file][0])
    assert np.array_equal(data.test_labels, written[fmt.test_file][1])
    assert data.class_names == ("a", "b") and data.augment is not None
    scaled = data.train_images.astype(np.float64) / 255
    # float32 copies of float64 statistics: 2^-24 = 6e-8 relative; 1e-6 is 16x that
    np.testing.assert_allclose(data.mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(data.std, scaled.std(axis=(0, 2, 3)), rtol=1e-6)


def test_official_file_size(tmp_path: Path) -> None:
    blob, images, labels = _records(10000, CIFAR10, 0)
    path = tmp_path / "test_batch.bin"
    path.write_bytes(blob)
    assert len(blob) == 30_730_000  # the size of the official test_batch.bin
    got_images, got_labels = read_cifar_file(path, CIFAR10)
    assert np.array_equal(got_images[-1], images[-1]) and np.array_equal(got_labels, labels)
    path.write_bytes(blob[:-1])
    with pytest.raises(DataError, match=r"30729999 bytes, but a cifar10 file of 10000 records of 3073 bytes has "
                                        r"30730000: truncated"):
        read_cifar_file(path, CIFAR10)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-3073], r"data_batch_2.bin: 6146 bytes \(2 records\), but a cifar10 file of 3 records"),
    (lambda b: b[:100], r"data_batch_2.bin: 100 bytes, but"),
    (lambda b: b[:3073] + bytes([10]) + b[3074:], r"record 1 has label byte 0 = 10, outside 0..9"),
    (lambda b: b"\x80\x02" + b[2:-1], r"a Python pickle, i.e. the 'python version' of cifar10"),
], ids=["one-record-short", "truncated", "bad-label", "pickle"])
def test_damaged_cifar10_is_refused(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    _write_set(tmp_path, SMALL10)
    path = tmp_path / "data_batch_2.bin"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path, cifar_formats=(SMALL10,))


def test_damaged_cifar100_and_missing_files(tmp_path: Path) -> None:
    _write_set(tmp_path, SMALL100)
    blob = bytearray((tmp_path / "test.bin").read_bytes())
    blob[0] = 20  # coarse labels are 0..19
    (tmp_path / "test.bin").write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"test.bin: record 0 has label byte 0 = 20, outside 0..19"):
        load_dataset(tmp_path, cifar_formats=(SMALL100,))
    (tmp_path / "train.bin").unlink()
    with pytest.raises(DataError, match="cifar100 is incomplete, missing train.bin"):
        load_dataset(tmp_path, cifar_formats=(SMALL100,))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: holds no CIFAR binary files"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(DataError, match="no such directory"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(DataError, match="applies to digits only"):
        load_dataset(tmp_path, channels=1)
    assert issubclass(DataError, CheckpointError)  # the CLI reports it as one line, exit status 2
