"""Framework-neutral ResNet specs, presets, layer plan and counts (numpy + stdlib only)."""

from shared_specs.canonical import canonical_shapes, check_weights
from shared_specs.checkpoint import FORMAT_VERSION, read_checkpoint, write_checkpoint
from shared_specs.counting import LayerRow, ParamCount, count_flops, count_params, layer_table, output_shape
from shared_specs.errors import CheckpointError, DataError, SpecError, WeightsError
from shared_specs.infer import infer_spec
from shared_specs.plan import Plan, make_plan
from shared_specs.presets import find_preset, get_spec, list_presets, preset_doc, preset_family, register, resolve_spec
from shared_specs.presets_keras_hub import keras_hub_vd  # noqa: F401  (importing it registers keras-hub's vd table)
from shared_specs.presets_timm import timm_architecture  # importing it registers timm's table
from shared_specs.spec import BatchNormSpec, ResNetSpec, StageSpec, StemSpec

__all__ = [
    "FORMAT_VERSION",
    "BatchNormSpec",
    "CheckpointError",
    "DataError",
    "LayerRow",
    "ParamCount",
    "Plan",
    "ResNetSpec",
    "SpecError",
    "StageSpec",
    "StemSpec",
    "WeightsError",
    "canonical_shapes",
    "check_weights",
    "count_flops",
    "count_params",
    "find_preset",
    "get_spec",
    "infer_spec",
    "layer_table",
    "list_presets",
    "make_plan",
    "output_shape",
    "preset_doc",
    "preset_family",
    "read_checkpoint",
    "register",
    "resolve_spec",
    "timm_architecture",
    "write_checkpoint",
]
