"""The experiment config: the schema (``schema``: frozen dataclasses, every key documented
and checked) and the loader (``loader``: YAML files and ``key=value`` overrides).
``docs/config.md`` is generated from the schema (``python -m retinamask_tf.config.docs``)."""

from retinamask_tf.config.loader import (load_config, parse_override, replace, to_dict,
                                         to_yaml)
from retinamask_tf.config.schema import (AnchorConfig, BackboneConfig, BoxCoderConfig,
                                         BuiltinDataConfig, ConfigError, DataConfig,
                                         EvalConfig, ExperimentConfig, FPNConfig, HeadConfig,
                                         LossConfig, MaskHeadConfig, MatcherConfig,
                                         ModelConfig, PostprocessConfig, TrainConfig)

__all__ = ["AnchorConfig", "BackboneConfig", "BoxCoderConfig", "BuiltinDataConfig",
           "ConfigError", "DataConfig", "EvalConfig", "ExperimentConfig", "FPNConfig",
           "HeadConfig", "LossConfig", "MaskHeadConfig", "MatcherConfig", "ModelConfig",
           "PostprocessConfig", "TrainConfig", "load_config", "parse_override", "replace",
           "to_dict", "to_yaml"]
