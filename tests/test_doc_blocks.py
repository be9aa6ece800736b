"""Every code block in README.md and docs/ is run, at a tiny size, or says why not
(those of ``SLOW_DOCS`` only with ``-m slow``).

A fenced block runs unless the line before it is ``<!-- not run: REASON -->``:

- ``bash``: each ``python main.py ...`` (or ``tflite/run.py``) command runs in a sandbox
  folder whose ``configs/demo.yaml`` and ``configs/mobile_demo.yaml`` are the demo configs
  shrunk to seconds (16 images of 128 px, 6 steps); setup commands (``python3 -m venv``, ``pip install``) are left to the
  fresh-venv CI run; anything else in an unmarked block fails the test.
- ``python``: executed in that sandbox, after the bash blocks before it (so that
  ``runs/demo`` exists when the README's example opens it).
- ``yaml``: loaded as a config file.

Blocks marked not to run still have every ``main.py`` command's flags parsed and, where
their config files exist in the repository, their configs and overrides loaded.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from retinamask_tf import config as C

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(REPO, "docs"))
                              if f.endswith(".md"))
BLOCK = re.compile(r"(?:<!-- not run: (?P<reason>[^\n]*?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)\n```",
                   re.S)
SETUP = re.compile(r"^(python3? -m venv|\S*pip install)")
# The demo configs (on the built-in data), at a size that trains, evaluates and exports in
# seconds.
SHRUNK = ("demo.yaml", "mobile_demo.yaml")
TINY = {"data": {"builtin": {"num_train": 16, "num_val": 6, "image_size": 128},
                 "short_side": 128, "long_side": 128},
        "train": {"steps": 6, "warmup_steps": 2, "lr_drop_steps": [4], "checkpoint_every": 3,
                  "summary_every": 3},
        "eval": {"batch_size": 6}}


def _blocks():
    """(doc, index, lang, body, reason or None) of every fenced block."""
    out = []
    for doc in DOCS:
        text = open(os.path.join(REPO, doc), encoding="utf-8").read()
        for i, m in enumerate(BLOCK.finditer(text)):
            out.append((doc, i, m.group("lang"), m.group("body"), m.group("reason")))
    return out


def _commands(body):
    """The shell commands of a block: continuation lines joined, comments dropped, split
    at ``&&``."""
    text = re.sub(r"\\\n\s*", " ", body)
    out = []
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            out += [c.strip() for c in line.split("&&") if c.strip()]
    return out


def _main_args(command):
    """The arguments after ``main.py`` of a command, or None when it does not run main.py."""
    if not re.search(r"\bmain\.py\b", command):
        return None
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word.endswith("main.py"):
            return words[i + 1:]
    return None


def _merge(base, update):
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_every_block_runs_or_says_why_not():
    unknown = [f"{doc} block {i} ({lang or 'no language'})" for doc, i, lang, _, reason in _blocks()
               if not reason and lang not in ("bash", "python", "yaml")]
    assert not unknown, f"mark these <!-- not run: REASON --> or give them a language: {unknown}"
    assert len(_blocks()) >= 15


def test_every_main_command_parses():
    """The flags of every main.py command in any block exist, and its configs and
    overrides load where its config files are in the repository (a renamed flag, a
    removed key or a schedule past train.steps in the docs fails here)."""
    sys.path.insert(0, REPO)
    from absl import flags

    import main  # noqa: F401  (defines the flags)
    checked = 0
    for doc, i, _, body, _ in _blocks():
        for command in _commands(body):
            args = _main_args(command)
            if args is None:
                continue
            args = [a for a in args if not a.startswith("[")]  # [optional] in a synopsis
            flags.FLAGS.unparse_flags()
            try:
                flags.FLAGS(["main.py"] + [a for a in args if "|" not in a])
            except flags.Error as e:
                pytest.fail(f"{doc} block {i}: {command}: {e}")
            configs = flags.FLAGS.config
            overrides = [o for o in flags.FLAGS.override if "..." not in o]
            if all(os.path.exists(os.path.join(REPO, c)) for c in configs) and (configs or overrides):
                C.load_config([os.path.join(REPO, c) for c in configs], overrides)
            checked += 1
    flags.FLAGS.unparse_flags()
    assert checked >= 10


def test_yaml_blocks_are_configs(tmp_path):
    found = 0
    for doc, i, lang, body, reason in _blocks():
        if lang == "yaml" and not reason:
            path = tmp_path / f"block{found}.yaml"
            path.write_text(body)
            C.load_config([str(path)])
            found += 1
    assert found >= 1


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A folder that looks like the repository to the docs' commands: configs/ (the demos
    shrunk), a photo and a folder of photos; the built-in data generated inside it."""
    root = tmp_path_factory.mktemp("docs")
    shutil.copytree(os.path.join(REPO, "configs"), root / "configs")
    cache = str(root / "cache")
    for name in SHRUNK:
        demo = yaml.safe_load(open(os.path.join(REPO, "configs", name)))
        tiny = _merge(demo, _merge(TINY, {"data": {"builtin": {"cache_dir": cache},
                                                   "image_check_cache": cache}}))
        with open(root / "configs" / name, "w") as f:
            yaml.safe_dump(tiny, f)
    # "Your data" in the docs' commands: the tiny built-in set, with a tiny schedule.
    with open(root / "mydata.yaml", "w") as f:
        yaml.safe_dump(_merge(TINY, {"data": {"kind": "builtin", "builtin": {"cache_dir": cache},
                                              "image_check_cache": cache}}), f)
    rng = np.random.default_rng(0)
    (root / "photos").mkdir()
    for name in ("photo.jpg", "photos/a.jpg", "photos/b.jpg"):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(root / name)
    return root


def _run_command(command, cwd):
    words = shlex.split(command)
    at = next(i for i, w in enumerate(words) if w.endswith(("main.py", "run.py")))
    script = os.path.join(REPO, words[at] if words[at] != "main.py" else "main.py")
    res = subprocess.run([sys.executable, script] + words[at + 1:], cwd=cwd, capture_output=True,
                         text=True, timeout=900, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert res.returncode == 0, f"{command}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


# Docs whose blocks run only with ``-m slow``: a chain of their own (mobile.md trains,
# exports and runs the mobile demo: about 75 s on 2 cores) that no other block needs.
SLOW_DOCS = (os.path.join("docs", "mobile.md"),)


def _run_blocks(sandbox, docs):
    """Runs the runnable blocks of ``docs`` in order; returns [(doc, what ran)]."""
    ran = []
    for doc, i, lang, body, reason in _blocks():
        if reason or lang == "yaml" or doc not in docs:
            continue
        if lang == "bash":
            for command in _commands(body):
                if SETUP.match(command):
                    continue  # the venv and install: what CI's fresh clone does
                assert re.search(r"(^|\s)(\S*python3?)\s+(\S*/)?(main\.py|tflite/run\.py)\b",
                                 command), f"{doc} block {i}: cannot run {command!r}"
                res = _run_command(command, sandbox)
                ran.append((doc, command))
                if "--mode=train_and_eval" in command:
                    assert "metrics" in res.stdout and "TFLite" in res.stdout, res.stdout[-2000:]
        elif lang == "python":
            code = compile(body, f"{doc} block {i}", "exec")
            exec(code, {"__name__": f"doc_block_{i}"})
            ran.append((doc, f"python block {i}"))
    print("\n".join(f"{doc}: {what}" for doc, what in ran))
    return ran


def test_the_blocks_run_as_written(sandbox, monkeypatch):
    """README first (its quick start makes runs/demo), then the docs, in order (those of
    ``SLOW_DOCS`` in the slow test below)."""
    monkeypatch.chdir(sandbox)
    ran = _run_blocks(sandbox, [d for d in DOCS if d not in SLOW_DOCS])
    assert len(ran) >= 8, ran
    docs_run = {doc for doc, _ in ran}
    assert "README.md" in docs_run and os.path.join("docs", "python_api.md") in docs_run, ran
    assert (sandbox / "runs" / "demo" / "export" / "saved_model_masks").is_dir()
    assert (sandbox / "runs" / "small" / "predict" / "results.json").is_file()
    assert (sandbox / "runs" / "fit" / "model.weights.h5").is_file()


@pytest.mark.slow
def test_the_slow_docs_blocks_run_as_written(sandbox, monkeypatch):
    """The blocks of ``SLOW_DOCS``, in order."""
    monkeypatch.chdir(sandbox)
    ran = _run_blocks(sandbox, SLOW_DOCS)
    assert {doc for doc, _ in ran} == set(SLOW_DOCS) and len(ran) >= 3, ran
