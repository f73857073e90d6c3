"""The workflow config's JSON schema, and the config's validation (the schema, then the
catalogue's cross-references). The schema: the static layout of ``config.schema.yaml``
(package data beside this module, so an installed package finds it too) plus what is
derived, never restated there: the enums of methods, table columns, encoder families and
rule families (from :mod:`pixmim.registry`), a plugin stage's own section, and the keys,
types, ranges and enums of the training, fine-tuning and dense sections (from the
dataclasses of :mod:`pixmim.config`).
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import jsonschema
import yaml

from pixmim import registry
from pixmim.config import (
    ConfigError,
    DenseConfig,
    FinetuneConfig,
    MonitorConfig,
    TrainConfig,
    VariantConfig,
    json_schema,
)
from pixmim.workflow.catalogue import check_references, one_line_errors, plugins

SCHEMA = resources.files("pixmim.workflow") / "config.schema.yaml"


@cache
def _static(path: Traversable) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def build_schema(config: dict[str, Any], path: Traversable = SCHEMA) -> dict[str, Any]:
    """The full schema for ``config`` (its plugins' methods, stages and sections included)."""
    schema = copy.deepcopy(_static(path))
    plug = plugins(config)
    defs, props = schema["$defs"], schema["properties"]
    methods = sorted(registry.methods(plug))
    defs["method"] = {"enum": methods}
    defs["columns"]["items"] = {"enum": list(registry.columns(plug))}
    # training sections: one source, the dataclasses (workflow-only keys excluded)
    defs["train"] = json_schema(TrainConfig, exclude=("device", "seed"),
                                required=("epochs", "batch_size", "base_lr"))
    # the pretraining's section: the training keys and what it watches (pretrain.monitor)
    defs["pretrain"] = {**defs["train"], "properties": {**defs["train"]["properties"],
                                                        "monitor": json_schema(MonitorConfig)}}
    ft = json_schema(FinetuneConfig, exclude=("fraction", "layer_decay"))
    tr = json_schema(TrainConfig, exclude=("device", "seed", "base_lr", "momentum"))
    defs["finetune"] = {**tr, "properties": {**tr["properties"], **ft["properties"],
                                             "recipe": {"enum": ["paper", "released"]}},
                        "required": ["recipe", "epochs", "batch_size"]}
    defs["finetune"]["properties"]["batch_size"] = {"type": "integer", "minimum": 2,
                                                    "multipleOf": 2}  # Mixup pairs images
    defs["finetune"]["properties"]["optimizer"] = {"enum": ["adamw"]}  # Table 9; the stage's
    defs["dense"] = json_schema(DenseConfig, exclude=("root", "lr", "layer_decay",
                                                      "weight_decay", "schedule", "drop_path"),
                                required=("recipe", "iters", "batch_size", "crop_size"))
    defs["recipe"] = {"type": "object", "additionalProperties": False, "properties": {
        "base_lr": json_schema(TrainConfig)["properties"]["base_lr"],
        "layer_decay": json_schema(FinetuneConfig)["properties"]["layer_decay"]}}
    defs["dense_recipe"] = json_schema(DenseConfig, only=(
        "lr", "layer_decay", "weight_decay", "schedule", "drop_path", "batch_size",
        "warmup_iters", "accum_steps", "nodes", "gpus"))
    for f in registry.families(plug):  # an encoder family's own values (ConvMAE's)
        defs["dense_recipe"]["properties"][f] = {"$ref": "#/$defs/dense_recipe"}
    v = json_schema(VariantConfig)["properties"]
    props["lowpass"]["properties"] = {
        "radius": v["radius"], "mode": v["lowpass_mode"], "reference_size": v["reference_size"],
        "scale_with_size": v["scale_with_size"], "adaptive_range": v["adaptive_range"]}
    props["variants"]["additionalProperties"]["properties"] = {
        "target": v["target"], "crop": v["crop"], "radius": v["radius"], "mode": v["lowpass_mode"]}
    rules = {s.rule for s in registry.stages(plug).values()}
    props["threads"]["properties"] = {r: {"type": "integer", "minimum": 1} for r in sorted(rules)}
    for spec in registry.stages(plug).values():
        if spec.job == "options" and spec.section:
            props[spec.section] = {"type": "object", "additionalProperties": False,
                                   **spec.params.get("schema", {})}
    return schema


def _error_path(err: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = set(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - allowed)
        key = f"{path}.{extra[0]}" if path else extra[0]
        return f"{key}: unknown key (allowed: {', '.join(sorted(allowed))})"
    return f"{path or '<root>'}: {err.message}"


def check_schema(config: dict[str, Any], path: Traversable = SCHEMA) -> None:
    """Raise ConfigError naming the first key that does not fit the schema."""
    validator = jsonschema.Draft202012Validator(build_schema(config, path))
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(f"config key {_error_path(errors[0])}")


def validate_config(config: dict[str, Any]) -> None:
    """Validate against the JSON schema and cross-check references; raise ConfigError."""
    check_schema(config)
    check_references(config)


def check_config(config: dict[str, Any]) -> None:
    """:func:`validate_config` for the Snakefile: a bad config stops snakemake with one line
    naming the key (a SystemExit; an exception would come with snakemake's traceback)."""
    one_line_errors(validate_config, config)
