"""Loads the experiment config: defaults <- YAML files <- ``key=value`` overrides.

Every setting has a typed default in ``config.schema``; YAML files and overrides replace
defaults and nothing else. Unknown keys are rejected with their dotted name, values are
type-checked and validated when the config is built, and the resolved config is written
next to checkpoints (``to_yaml``, ``run_dir``) so that eval and export read back exactly
what training used.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from typing import Any, Literal, Optional

import yaml

from retinamask_tf.config.schema import ConfigError, ExperimentConfig



def _convert(value: Any, hint: Any, key: str) -> Any:
    """Converts a YAML value to the annotated type, or raises ConfigError naming ``key``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return _build(hint, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        item = args[0]
        if len(args) == 2 and args[1] is Ellipsis or len(args) == 1:
            return tuple(_convert(v, item, key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"config key '{key}': expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, key) for v, a in zip(value, args))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 1e3, 2.0
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {hint!r} for '{key}'")


def all_keys(cls=ExperimentConfig, prefix: str = "") -> list:
    """Every dotted key of the schema (sections and leaves)."""
    out = []
    for field in dataclasses.fields(cls):
        out.append(prefix + field.name)
        hint = typing.get_type_hints(cls)[field.name]
        if dataclasses.is_dataclass(hint):
            out += all_keys(hint, prefix + field.name + ".")
    return out


def _closest(key: str) -> str:
    """'; did you mean ...?' with the schema's keys closest to ``key`` (by the whole dotted
    name, and by its last part anywhere in the schema), or the section's keys."""
    keys = [k for k in all_keys() if not key.startswith(k + ".")]  # not its own sections
    near = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    leaf = key.rsplit(".", 1)[-1]
    near += [k for k in keys if k.rsplit(".", 1)[-1] == leaf and k not in near]
    near += [k for k in keys if k not in near and difflib.SequenceMatcher(
        None, leaf, k.rsplit(".", 1)[-1]).ratio() >= 0.8][:3]
    if near:
        return "; did you mean " + " or ".join(f"'{k}'" for k in near[:4]) + "?"
    section = key.rsplit(".", 1)[0] if "." in key else ""
    known = sorted(k for k in keys if k.startswith(section + ".") and "." not in
                   k[len(section) + 1:]) if section else sorted(k for k in keys if "." not in k)
    return f" (known: {', '.join(known)})"


def _build(cls, values: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}'{_closest(prefix + key)}")
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - guarded by the key check above
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}': {e}") from e


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def to_dict(config) -> dict:
    """Plain nested dict (tuples as lists) of a config dataclass."""
    out = {}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


class _Loader(yaml.SafeLoader):
    """PyYAML's YAML 1.1 with two of YAML 1.2's rules: the float forms 1.1 reads as strings
    (``1e-4``, ``1E5``, ``+2e3``: 1.1 wants a dot in the mantissa), and booleans only
    ``true``/``false`` (1.1 also reads ``on``/``off``/``yes``/``no`` as booleans, so that
    ``data.verify_images: off`` became ``False``)."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _yaml_load(stream):
    return yaml.load(stream, Loader=_Loader)


def parse_override(text: str) -> dict:
    """``'a.b.c=value'`` -> ``{'a': {'b': {'c': value}}}`` with the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    value = _yaml_load(raw) if raw.strip() else None
    out: dict = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def load_config(paths=(), overrides=(), base: Optional[ExperimentConfig] = None) -> ExperimentConfig:
    """Builds the experiment config: defaults <- each YAML file in order <- overrides.

    Args:
      paths: YAML files; later files win.
      overrides: strings ``dotted.key=yaml_value``; applied last.
      base: config to start from (default: the dataclass defaults).
    Raises:
      ConfigError: an unknown key, a wrong type or an invalid value, naming the key
        (and the file, for YAML errors).
    """
    values = to_dict(base or ExperimentConfig())
    layers = []  # (path, values after it)
    for path in paths:
        try:
            with open(path) as f:
                loaded = _yaml_load(f) or {}
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {path}") from e
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.object[e.start]:#04x} "
                              f"at offset {e.start})") from e
        except OSError as e:  # a folder, no permission, ...
            raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        values = _merge(values, loaded)
        layers.append((path, values))
    for text in overrides:
        values = _merge(values, parse_override(text))
    try:
        return _build(ExperimentConfig, values)
    except ConfigError as final:
        # Name the file that brought the problem in: the first one after which the same
        # problem shows (a key checked against another, e.g. train.steps and its schedule,
        # may be fixed by a later file; then it is not that file's problem).
        for path, partial in layers:
            try:
                _build(ExperimentConfig, partial)
            except ConfigError as e:
                if str(e) == str(final):
                    raise ConfigError(f"{path}: {e}") from e
        raise


def to_yaml(config: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def replace(config, **changes):
    """``dataclasses.replace`` with dotted keys: ``replace(cfg, **{'model.num_classes': 3})``."""
    nested: dict = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        nested.setdefault(head, {})
        if rest:
            nested[head][rest] = value
        else:
            nested[head] = value
    kwargs = {}
    for head, value in nested.items():
        if isinstance(value, dict) and dataclasses.is_dataclass(getattr(config, head)):
            kwargs[head] = replace(getattr(config, head), **value)
        else:
            kwargs[head] = value
    return dataclasses.replace(config, **kwargs)
