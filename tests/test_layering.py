"""The package's imports run one way, down the layers, and form no circle.

  0  ops, config, and the small shared helpers (progress, image I/O, COCO results, ...)
  1  data, losses, layers
  2  modeling
  3  run_dir (a run directory: config.yaml, label map, checkpoints, restore)
  4  training, evaluation, export, detector (the Python detection API)
  5  predict, ablation (applications of the above)
  6  cli (one module per main.py mode)

A module may import its own package and anything in a lower layer; between packages of one
layer, nothing. Imports inside functions count too.
"""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "retinamask_tf")
LAYERS = {
    "ops": 0, "config": 0, "progress": 0, "image_io": 0, "coco_results": 0,
    "native_noise": 0, "visualize": 0, "plots": 0, "detections": 0, "mask_paste": 0,
    "data": 1, "losses": 1, "layers": 1,
    "modeling": 2,
    "run_dir": 3,
    "training": 4, "evaluation": 4, "export": 4, "detector": 4,
    "predict": 5, "ablation": 5, "weights": 5,
    "cli": 6,
}


def _modules():
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = path
    return out


def _imports(path, modules):
    """(line, imported module) of every retinamask_tf import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                name = full if full in modules else node.module
                if name.startswith("retinamask_tf"):
                    found.append((node.lineno, name))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names
                      if a.name.startswith("retinamask_tf.")]
    return found


def _part(module):
    """The top-level part of ``retinamask_tf.<part>...``, or None for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_part_has_a_layer():
    parts = {_part(m) for m in _modules()} - {None}
    assert parts <= set(LAYERS), f"give these a layer: {sorted(parts - set(LAYERS))}"


def test_imports_run_down_the_layers():
    modules = _modules()
    wrong = []
    for module, path in sorted(modules.items()):
        here = _part(module)
        if here is None:
            continue  # the package's lazy API names (see retinamask_tf/__init__.py)
        for line, target in _imports(path, modules):
            there = _part(target)
            if there is None or there == here:
                continue
            if LAYERS[there] >= LAYERS[here]:
                wrong.append(f"{os.path.relpath(path, REPO)}:{line} imports {target} "
                             f"(layer {LAYERS[here]} -> {LAYERS[there]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    modules = _modules()
    graph = {m: {t for _, t in _imports(p, modules) if t in modules and t != m}
             for m, p in modules.items()}
    graph = {m: {t for t in deps if not m.startswith(t + ".")} for m, deps in graph.items()}
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                pytest.fail("import circle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
