"""Model files of either framework, read to and written from (spec, canonical weights).

Formats are recognised by their content, not their name: safetensors (our canonical
checkpoint, or a plain one), PyTorch `torch.save` files (read with
`weights_only=True`: nothing is unpickled beyond tensors and containers; a
torchvision or timm state_dict is canonical as it is), Keras `.keras` archives (of
our ResNet, of a keras.applications ResNet, or of any functional model a spec holds:
resnet_keras.from_model), Keras `.weights.h5`, ONNX graphs
that kept their BatchNorms, and directories: transformers' `save_pretrained` and
keras-hub's presets (interop/directories.py). Every write goes to a temp file (or
directory) renamed into place, so a failure leaves no half-written output.

What travels beside the weights (the input preprocessing and the class names) is read
from wherever a format keeps it, stored in the canonical checkpoint's metadata, and
written into each target's own config (`read_model` / `write_model_file`).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_rosetta.frameworks import import_frameworks
from shared_specs import CheckpointError, ResNetSpec, SpecError, check_weights, infer_spec, write_checkpoint
from shared_specs import preprocessing as pre
from shared_specs.checkpoint import atomic_write, is_safetensors, read_checkpoint
from shared_specs.spec import describe_differences

FORMATS = ("safetensors", "torch", "keras", "keras-weights", "onnx", "transformers", "keras-hub")
# What `write_model_file` can write: FORMATS, and keras.applications' own model as a .keras file.
OUTPUT_FORMATS = (*FORMATS, "keras-applications")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def detect_format(path: str | os.PathLike[str]) -> str:
    """One of FORMATS, from the file's first bytes (and the members of a zip), or a
    directory's config.json."""
    path = Path(path)
    if path.is_dir():
        from resnet_rosetta.interop.directories import detect_directory

        return detect_directory(path)
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read: {err.strerror or err}") from None
    if is_safetensors(head):
        return "safetensors"
    if head.startswith(_HDF5_MAGIC):
        return "keras-weights"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            raise CheckpointError(f"{path}: a damaged or truncated zip archive") from None
        if "config.json" in names and "model.weights.h5" in names:
            return "keras"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        raise CheckpointError(f"{path}: a zip archive that is neither a .keras model nor a torch.save file")
    if head[:1] == b"\x80":  # a pickle: torch.save's legacy format; read with weights_only
        return "torch"
    if head[:1] == b"\x08":  # protobuf field 1 (ir_version, a varint): how every ONNX ModelProto starts
        return "onnx"
    raise CheckpointError(f"{path}: unrecognised format (not safetensors, torch.save, .keras, HDF5 or ONNX)")


_SUFFIXES = {".safetensors": "safetensors", ".weights.h5": "keras-weights", ".keras": "keras", ".pth": "torch",
             ".pt": "torch", ".bin": "torch", ".onnx": "onnx"}


def format_for_output(path: str | os.PathLike[str], to: str | None = None) -> str:
    """The format to write `path` in: `to` (one of OUTPUT_FORMATS) if given, else the
    suffix's. keras.applications models are written as .keras archives."""
    name = str(path)
    by_suffix = next((fmt for suffix, fmt in _SUFFIXES.items() if name.endswith(suffix)), None)
    if to is None:
        if by_suffix is None:
            raise CheckpointError(f"{path}: cannot tell the output format; use .safetensors, .pth/.pt, .keras, "
                                  ".weights.h5 or .onnx, or name it with --to")
        return by_suffix
    if to not in OUTPUT_FORMATS:
        raise CheckpointError(f"--to {to}: not a format; choose from {', '.join(OUTPUT_FORMATS)}")
    if to in ("transformers", "keras-hub") and Path(path).exists() and not Path(path).is_dir():
        raise CheckpointError(f"{path}: --to {to} writes a directory, and a file of that name exists")
    needs = {"keras": ".keras", "keras-weights": ".weights.h5", "keras-applications": ".keras"}.get(to)
    if needs and not name.endswith(needs):  # Keras refuses any other suffix
        raise CheckpointError(f"{path}: Keras writes {to} only to a file named *{needs}")
    return to


@dataclass(frozen=True)
class ModelFile:
    """What a model file holds: the network, and what travels with it where the format says it."""

    spec: ResNetSpec
    weights: dict[str, np.ndarray]
    preprocessing: pre.Preprocessing | None = None
    labels: list[str] | None = None


def read_model(path: str | os.PathLike[str], spec: ResNetSpec | None = None) -> ModelFile:
    """A model file or directory with its preprocessing and class names where the format
    keeps them (our safetensors metadata, a transformers or keras-hub directory, a
    keras.applications model's preprocess_input mode); weights checked as in read_model_file."""
    path = Path(path)
    fmt = detect_format(path)
    prep, labels = None, None
    if fmt in ("transformers", "keras-hub"):
        from resnet_rosetta.interop.directories import read_directory

        found, weights, prep, labels = read_directory(path)
        found = _pick_spec(path, found, spec)
    elif fmt == "safetensors":
        stored, weights, meta = read_checkpoint(path)
        found = _pick_spec(path, stored, spec, weights)
        prep, labels = pre.from_metadata(meta, str(path))
    else:
        found, weights, app = _read_unchecked(path, spec)
        if app:  # keras.applications' preprocess_input: "caffe" for v1, "tf" for v2
            prep = pre.KERAS_APPLICATIONS_MODES["tf" if found.preactivation else "caffe"]
    if labels is not None and len(labels) != found.num_classes:
        raise CheckpointError(f"{path}: {len(labels)} labels for the {found.num_classes} classes of {found.name}")
    return ModelFile(found, check_weights(found, weights, source=str(path)), prep, labels)


def read_model_file(path: str | os.PathLike[str], spec: ResNetSpec | None = None
                    ) -> tuple[ResNetSpec, dict[str, np.ndarray]]:
    """(spec, canonical weights) of any supported file, the weights checked against the spec
    (shapes, float dtypes, finite values): see `_read_unchecked` for where the spec comes from."""
    if Path(path).is_dir():
        found = read_model(path, spec)
        return found.spec, found.weights
    found_spec, weights, _ = _read_unchecked(Path(path), spec)
    return found_spec, check_weights(found_spec, weights, source=str(path))


def _read_unchecked(path: Path, spec: ResNetSpec | None) -> tuple[ResNetSpec, dict[str, np.ndarray], bool]:
    """Files that carry no spec (a .pth state_dict, a plain safetensors file) get it from
    `spec`, else from `shared_specs.infer_spec` on their tensor names and shapes; Keras
    weight files need `spec`. A file's own spec (ours, or a keras.applications model's)
    must equal a given one. The flag says whether a keras.applications model was read.
    """
    fmt = detect_format(path)
    if fmt == "safetensors":
        stored, weights, _ = read_checkpoint(path)
        return _pick_spec(path, stored, spec, weights), weights, False
    if fmt == "torch":
        weights = _read_torch(path)
        return _pick_spec(path, None, spec, weights), weights, False
    if fmt == "onnx":
        from resnet_rosetta.interop.onnx_import import from_onnx

        return (*from_onnx(path, spec), False)
    torch, keras = import_frameworks()
    import resnet_keras as rk

    if fmt == "keras":
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as err:  # Keras raises many types for a damaged archive
            raise CheckpointError(f"{path}: cannot load the .keras model: {_one_line(err)}") from None
        if isinstance(model, rk.ResNet):
            return _pick_spec(path, model.spec, spec), rk.export_weights(model), False
        try:
            found, weights = rk.from_keras_applications(model)
        except SpecError:
            try:  # any other ResNet-shaped functional or Sequential model (a fine-tuned one, a hand-written one)
                found, weights, _ = rk.from_model(model)
            except SpecError as err:
                raise CheckpointError(f"{path}: a .keras model that is not a ResNet a spec can hold: {err}") from None
            return _pick_spec(path, found, spec), weights, False
        return _pick_spec(path, found, spec), weights, True
    model = rk.build(_need_spec(path, spec), initialize=False)  # the file's weights are loaded next
    try:
        _load_keras_weights(model, path)
        return model.spec, rk.export_weights(model), False
    except Exception as err:  # Keras raises ValueError and others for weights of another model
        ours = f"not into resnet_keras.build({model.spec.name!r}): {_one_line(err)}"
    # A Keras weights file has no architecture, and keras.applications' own (Keras 3 .weights.h5,
    # or the legacy .h5 its published weights come in) load only into its own model.
    try:
        app = rk.to_keras_applications(model.spec, rk.export_weights(model))
    except SpecError:
        raise CheckpointError(f"{path}: cannot load these Keras weights, {ours}") from None
    try:
        _load_keras_weights(app, path)
    except Exception as err:
        raise CheckpointError(f"{path}: cannot load these Keras weights, {ours}; nor into keras.applications' "
                              f"{app.name}: {_one_line(err)}") from None
    found, weights = rk.from_keras_applications(app)
    return _pick_spec(path, found, model.spec), weights, True


def _load_keras_weights(model: object, path: Path) -> None:
    import warnings

    with warnings.catch_warnings():  # Keras warns of each layer it skips, then raises: the error says it
        warnings.simplefilter("ignore")
        model.load_weights(path)  # type: ignore[attr-defined]


def read_back_keras(model: object, path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The canonical weights of a .keras or .weights.h5 file written from our Keras `model`,
    loaded into that model (its architecture is the file's: nothing is rebuilt).

    A .keras archive's weights are extracted first: Keras reads them through the zip stream,
    which re-reads and re-checksums the member at every seek (22 s for a resnet152; 0.3 s to
    extract, 2 s to load the extracted file)."""
    import tempfile

    import resnet_keras as rk

    try:
        with tempfile.TemporaryDirectory() as tmp:
            weights_file = Path(path)
            if zipfile.is_zipfile(weights_file):
                with zipfile.ZipFile(weights_file) as archive:
                    weights_file = Path(archive.extract("model.weights.h5", tmp))
            _load_keras_weights(model, weights_file)
    except Exception as err:  # Keras raises ValueError and others; a zip without the member KeyError
        raise CheckpointError(f"{path}: the written file does not load back: {_one_line(err)}") from None
    return rk.export_weights(model)  # type: ignore[arg-type]


def _one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split()) or type(err).__name__  # Keras's messages span several lines
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_model_file(path: str | os.PathLike[str], spec: ResNetSpec, weights: Mapping[str, np.ndarray],
                     to: str | None = None, *, preprocessing: pre.Preprocessing | None = None,
                     labels: list[str] | None = None, keras_model: object = None) -> list[str]:
    """Write `weights` of `spec` atomically, in format `to` or else the one `path`'s suffix names;
    returns notes on what the format could not keep.

    "torch" writes a state_dict, which torchvision's and timm's models load as it is;
    "keras-applications" the keras.applications model itself (SpecError if it has
    none of `spec`); "onnx" the graph `resnet_torch.export_onnx` writes; "transformers"
    and "keras-hub" a directory their own `from_pretrained` / `from_preset` load.
    `preprocessing` and `labels` go into the safetensors metadata and those directories;
    the other formats have no place for them. `keras_model`, our Keras model already
    holding `weights`, is saved as it is for "keras" and "keras-weights" (no second build).
    """
    fmt = format_for_output(path, to)
    if fmt in ("transformers", "keras-hub"):
        from resnet_rosetta.interop.directories import write_directory

        return write_directory(path, fmt, spec, weights, preprocessing, labels)
    notes = [] if preprocessing is None and labels is None or fmt == "safetensors" else \
        [f"{fmt} files have no place for the preprocessing and class names; they were left out"]
    if fmt == "safetensors":
        write_checkpoint(path, weights, spec, metadata=pre.to_metadata(preprocessing, labels))
        return notes
    torch, keras = import_frameworks()
    if fmt == "torch":
        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in check_weights(spec, weights).items()}
        atomic_write(path, lambda f: torch.save(state, f))
        return notes
    if fmt == "onnx":
        import resnet_torch as rt

        source = rt.build(spec, initialize=False)
        rt.import_weights(source, weights)
        rt.export_onnx(source, path)
        return notes
    import resnet_keras as rk

    if fmt == "keras-applications":
        model = rk.to_keras_applications(spec, weights)
    elif keras_model is not None:
        model = keras_model
    else:
        model = rk.build(spec, initialize=False)
        rk.import_weights(model, weights)
    target = Path(path)
    # Keras insists on the suffix, so the temp file keeps it; renamed when complete.
    suffix = ".weights.h5" if fmt == "keras-weights" else ".keras"
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp{suffix}")
    try:
        model.save_weights(tmp) if fmt == "keras-weights" else model.save(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return notes


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    torch, _ = import_frameworks()
    try:
        with warnings.catch_warnings():  # torch warns of pickle protocols before refusing them: the error says it
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for code-executing pickles, RuntimeError for damage
        raise CheckpointError(_torch_load_error(path, err)) from None
    for key in ("state_dict", "model", "model_state_dict"):  # common training-checkpoint wrappers
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state_dict (a dict of tensors)")
    return {k.removeprefix("module."): v.detach().cpu().numpy().copy() for k, v in obj.items()}


def _torch_load_error(path: Path, err: Exception) -> str:
    """One line for a file torch.load(weights_only=True) refuses; torch's own message advises
    weights_only=False, which would run whatever code the pickle holds: not repeated here."""
    text = str(err)
    if "Unsupported global:" in text:  # the pickle calls a class or function: code
        words = text.split("Unsupported global:", 1)[1].split()  # "GLOBAL __main__.Foo was not ..."
        name = words[1] if len(words) > 1 else "a Python object"
        return f"{path}: the file holds Python code ({name}), which resnet-rosetta will not run: it loads weights only"
    if "WeightsUnpickler error:" in text:
        code = [name for name in _pickle_globals(path) if not name.startswith(("torch.", "collections.", "_codecs."))]
        if code:  # torch stopped at an opcode it does not take, before the call: name what would have run
            return f"{path}: the file holds Python code ({code[0]}), which resnet-rosetta will not run: it loads " \
                   "weights only"
        lines = [line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines() if line.strip()]
        return f"{path}: not a torch file of tensors ({lines[0] if lines else 'an unreadable pickle'})"
    return f"{path}: not a loadable torch file: {text.strip().splitlines()[0] if text.strip() else type(err).__name__}"


def _pickle_globals(path: Path) -> list[str]:
    """The `module.name` of every class or function a pickle (a legacy torch file, or a zip's
    data.pkl) would import, read with pickletools: its opcodes are parsed, nothing is run."""
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
        else:
            data = path.read_bytes()
        names, strings = [], []
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                names.append(".".join(str(arg).split(" ", 1)))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
        return names
    except Exception:  # a damaged pickle: torch's own message says enough
        return []


def _need_spec(path: Path, spec: ResNetSpec | None) -> ResNetSpec:
    if spec is None:
        raise CheckpointError(f"{path}: the file carries no spec; name the architecture with --preset")
    return spec


def _pick_spec(path: Path, stored: ResNetSpec | None, given: ResNetSpec | None,
               weights: Mapping[str, np.ndarray] | None = None) -> ResNetSpec:
    if stored is None and given is None and weights is not None:
        try:
            return infer_spec(weights)
        except SpecError as err:
            raise CheckpointError(f"{path}: not a ResNet checkpoint this tool can read: {err}") from None
    if stored is None:
        return _need_spec(path, given)
    if given is not None and (diff := stored.differences(given)):
        raise CheckpointError(f"{path}: its stored spec differs from the one given in "
                              f"{describe_differences(diff, 'stored', 'given')}")
    return stored
