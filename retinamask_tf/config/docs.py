"""Writes ``docs/config.md`` from the schema: every key with its type, default and doc.

    python -m retinamask_tf.config.docs            # rewrites docs/config.md
    python -m retinamask_tf.config.docs --check    # exit 1 if docs/config.md is stale
"""

import dataclasses
import os
import sys
import typing

from retinamask_tf.config import schema

HEADER = """# Configuration reference

Generated from `retinamask_tf/config/schema.py` by `python -m retinamask_tf.config.docs`;
do not edit by hand (a test fails when this file and the schema differ).

A config is built as: these defaults <- each `--config` YAML file in order <- each
`--override key=value`. Keys are dotted paths (`train.steps`); an unknown key, a value of
the wrong type or out of range stops with an error naming the key. YAML booleans are
`true`/`false` only, and numbers such as `1e-4` are numbers. The resolved config is written
to `MODEL_DIR/config.yaml`; a resumed run may change only the schedule length, logging,
evaluation and where (not what) data and caches live.
"""


def _type_name(hint):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return _type_name(inner[0]) + " or null"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} {_type_name(args[0])}"
    return getattr(hint, "__name__", str(hint))


def _value(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _sections(cls, prefix):
    hints = typing.get_type_hints(cls)
    rows, nested = [], []
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            nested.append((hint, f"{prefix}{field.name}."))
            continue
        doc = field.metadata.get("doc", "").replace("|", "\\|")
        rows.append(f"| `{prefix}{field.name}` | {_type_name(hint)} | "
                    f"`{_value(field.default)}` | {doc} |")
    out = []
    if rows:
        title = prefix.rstrip(".")
        out.append(f"\n## `{title}`\n\n{(cls.__doc__ or '').strip()}\n\n"
                   "| key | type | default | meaning |\n| --- | --- | --- | --- |\n"
                   + "\n".join(rows) + "\n")
    for sub, sub_prefix in nested:
        out.extend(_sections(sub, sub_prefix))
    return out


def markdown():
    """The whole reference page."""
    return HEADER + "".join(_sections(schema.ExperimentConfig, ""))


def main(argv):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(repo, "docs", "config.md")
    text = markdown()
    if "--check" in argv:
        current = open(path).read() if os.path.exists(path) else ""
        if current != text:
            print(f"{path} is stale: run python -m retinamask_tf.config.docs", file=sys.stderr)
            return 1
        return 0
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
