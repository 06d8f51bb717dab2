"""The run config: one validated YAML per run, presets, checks, and conversion to libraries.

YAML is loaded safely (plain data only, never executed) and checked by pydantic
models; errors name the file, field and line. ``import tuitune.config`` needs
pydantic and PyYAML only: conversions import transformers / peft / torch inside.
"""

from tuitune.config.checks import ERROR, WARN, Issue, check_config, check_files, summary
from tuitune.config.arguments import (
    METADATA_FIELDS,
    to_bnb_config,
    to_data_settings,
    to_deepspeed_config,
    to_eval_settings,
    to_launch_command,
    to_lora_config,
    to_model_kwargs,
    to_training_arguments,
)
from tuitune.config.loader import (
    all_fields,
    config_from_data,
    dump_config,
    errors_of,
    load_config,
    loads_config,
    parse_yaml,
    save_config,
)
from tuitune.config.presets import PRESETS, Preset, diff_against, get_preset, preset_names
from tuitune.config.schema import (
    SECTIONS,
    DataConfig,
    DistributedConfig,
    EvaluationConfig,
    LoraSection,
    QuantizationConfig,
    RunConfig,
    TrainingConfig,
    describe,
    field_info,
    flatten,
    iter_fields,
    unflatten,
)

__all__ = [
    "ERROR", "WARN", "Issue", "check_config", "check_files", "summary",
    "METADATA_FIELDS", "to_bnb_config", "to_data_settings",
    "to_deepspeed_config", "to_eval_settings", "to_launch_command", "to_lora_config", "to_model_kwargs",
    "to_training_arguments",
    "all_fields", "config_from_data", "dump_config", "errors_of", "load_config", "loads_config", "parse_yaml",
    "save_config",
    "PRESETS", "Preset", "diff_against", "get_preset", "preset_names",
    "SECTIONS", "DataConfig", "DistributedConfig", "EvaluationConfig", "LoraSection", "QuantizationConfig",
    "RunConfig", "TrainingConfig", "describe", "field_info", "flatten", "iter_fields", "unflatten",
]
