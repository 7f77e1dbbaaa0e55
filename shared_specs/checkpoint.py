"""The canonical checkpoint file: safetensors holding weights, spec and format version.

The safetensors layout (8-byte little-endian header length, a JSON header, raw
little-endian tensor bytes) is small and fully specified, so it is read and written
here with numpy alone: `shared_specs` stays framework-free, and every way a file can
be broken gets a message naming the file. Files are interchangeable with the
`safetensors` library's (tests check both directions). Nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from shared_specs.errors import CheckpointError, SpecError
from shared_specs.spec import ResNetSpec, describe_differences

FORMAT = "resnet-rosetta"
FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
_DTYPES = {
    "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
    "I8": np.dtype("i1"), "I16": np.dtype("<i2"), "I32": np.dtype("<i4"), "I64": np.dtype("<i8"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}


def write_checkpoint(path: str | os.PathLike[str], weights: Mapping[str, np.ndarray], spec: ResNetSpec | None = None,
                     metadata: Mapping[str, str] | None = None) -> None:
    """Write `weights` (and `spec`) to `path` atomically: a temp file renamed into place."""
    meta = dict(metadata or {})
    if spec is not None:
        meta.update(format=FORMAT, format_version=str(FORMAT_VERSION), spec=spec.to_json(indent=None))
    header: dict[str, object] = {"__metadata__": meta} if meta else {}
    arrays = []
    offset = 0
    for name, value in weights.items():
        array = np.ascontiguousarray(value)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        if dtype not in _CODES:
            raise CheckpointError(f"cannot store {name}: dtype {array.dtype} has no safetensors code")
        array = array.astype(dtype, copy=False)
        header[name] = {"dtype": _CODES[dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
        arrays.append(array)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep tensor data 8-byte aligned, as safetensors does
    atomic_write(path, lambda f: _write_all(f, blob, arrays))


def _write_all(f, blob: bytes, arrays: list[np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for array in arrays:
        f.write(array.tobytes())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write) -> None:  # type: ignore[no-untyped-def]
    """Call `write(file)` on a temp file beside `path`, then rename it over `path`.

    A crash or an exception leaves `path` as it was and no temp file behind. The file
    gets the permissions `open()` would give it (mkstemp's are owner-only).
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[ResNetSpec | None, dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file: (spec or None, weights, metadata).

    The spec is None for plain safetensors files (timm's, a converted torchvision
    state_dict). Raises CheckpointError naming the file for anything malformed.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read: {err.strerror or err}") from None
    header, body = _parse_header(path, data)
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path}: __metadata__ must map strings to strings")
    weights = _parse_tensors(path, header, body)
    spec = None
    if meta.get("format") == FORMAT:
        version = meta.get("format_version")
        if version != str(FORMAT_VERSION):
            raise CheckpointError(f"{path}: format_version {version!r} is not supported "
                                  f"(this is version {FORMAT_VERSION})")
        try:
            spec = ResNetSpec.from_json(meta.get("spec", ""))
        except SpecError as err:
            raise CheckpointError(f"{path}: stored spec is invalid: {err}") from None
    return spec, weights, meta


def read_weights_for(path: str | os.PathLike[str], spec: ResNetSpec, loader: str) -> dict[str, np.ndarray]:
    """Weights of a checkpoint to be loaded into a model of `spec`; a stored spec must match it.

    `loader` names the function that builds the right model instead (for the message).
    """
    stored, weights, _ = read_checkpoint(path)
    if stored is not None and (diff := stored.differences(spec)):
        raise CheckpointError(
            f"{path}: stored spec differs from the model's in {describe_differences(diff, 'stored', 'model')}; "
            f"build the model from the file with {loader}(path)"
        )
    return weights


def read_spec_and_weights(path: str | os.PathLike[str]) -> tuple[ResNetSpec, dict[str, np.ndarray]]:
    """Spec and weights of a canonical checkpoint; a file without a spec is an error."""
    spec, weights, _ = read_checkpoint(path)
    if spec is None:
        raise CheckpointError(f"{path}: holds no resnet-rosetta spec (a plain safetensors file?)")
    return spec, weights


def is_safetensors(data: bytes) -> bool:
    """Whether `data` (a file's first bytes, 10 or more) starts like a safetensors file."""
    if len(data) < 10:
        return False
    (n,) = struct.unpack("<Q", data[:8])
    return 2 <= n <= _MAX_HEADER and data[8:9] == b"{"


def _parse_header(path: Path, data: bytes) -> tuple[dict, memoryview]:  # type: ignore[type-arg]
    if len(data) < 8:
        raise CheckpointError(f"{path}: not a safetensors file (only {len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise CheckpointError(f"{path}: not a safetensors file or truncated (header of {n} bytes, file of {len(data)})")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: safetensors header is not valid JSON (corrupted file?)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object")
    return header, memoryview(data)[8 + n :]


def _parse_tensors(path: Path, header: dict, body: memoryview) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    weights: dict[str, np.ndarray] = {}
    spans = []
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed or unsupported entry {info!r}") from None
        if any(d < 0 for d in shape) or not 0 <= begin <= end:
            raise CheckpointError(f"{path}: tensor {name!r} has invalid shape or offsets")
        if end > len(body):
            raise CheckpointError(f"{path}: truncated: tensor {name!r} ends at byte {end} of {len(body)} data bytes")
        if (end - begin) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise CheckpointError(f"{path}: tensor {name!r}: {end - begin} bytes do not hold {shape} {info['dtype']}")
        spans.append((begin, end, name))
        weights[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    spans.sort()
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise CheckpointError(f"{path}: tensors {a!r} and {b!r} overlap")
    return weights
