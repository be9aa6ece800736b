import dataclasses
import os
import re

import pytest

from retinamask_tf import config as C


def test_defaults_follow_the_reference():
    c = C.ExperimentConfig()
    assert c.anchors.num_anchors == 9
    assert c.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert c.matcher.best_match_threshold == 0.0
    assert c.loss.beta == pytest.approx(0.11) and c.loss.beta_momentum == pytest.approx(0.9)
    assert c.postprocess.nms_iou_threshold == pytest.approx(0.4)
    assert c.image_size == (1408, 1408)  # 1333 rounded up to a multiple of 128


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        C.ExperimentConfig().train.steps = 3


def test_yaml_and_overrides(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("train:\n  steps: 10\n  warmup_steps: 2\n  lr_drop_steps: [4, 8]\nmodel:\n"
                 "  backbone: {depth: 18}\n")
    b = tmp_path / "b.yaml"
    b.write_text("train:\n  steps: 20\n")
    c = C.load_config([str(a), str(b)], ["model.head.num_convs=2", "matcher.best_match_threshold=null"])
    assert c.train.steps == 20 and c.train.lr_drop_steps == (4, 8)
    assert c.model.backbone.depth == 18 and c.model.head.num_convs == 2
    assert c.matcher.best_match_threshold is None
    again = tmp_path / "resolved.yaml"
    again.write_text(C.to_yaml(c))
    assert C.load_config([str(again)]) == c


@pytest.mark.parametrize("text, value", [
    ("1e-4", 1e-4), ("1E-4", 1e-4), ("+2e-3", 2e-3), (".5e-3", 5e-4), ("1.e-3", 1e-3),
    ("0.0001", 1e-4), ("1.0e-4", 1e-4),
])
def test_numbers_in_any_usual_notation(tmp_path, text, value):
    # PyYAML (YAML 1.1) reads 1e-4 as a string; overrides and files must both take it.
    assert C.load_config([], [f"train.weight_decay={text}"]).train.weight_decay == value
    f = tmp_path / "c.yaml"
    f.write_text(f"train:\n  weight_decay: {text}\n")
    assert C.load_config([str(f)]).train.weight_decay == value
    assert C.parse_override(f"a.b=-{text.lstrip('+')}") == {"a": {"b": -value}}


def test_off_is_a_string_and_booleans_are_true_false(tmp_path):
    # YAML 1.1 reads off/on/yes/no as booleans: 'verify_images: off' became False.
    assert C.load_config([], ["data.verify_images=off"]).data.verify_images == "off"
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  verify_images: off\n  hflip: false\n")
    cfg = C.load_config([str(f)])
    assert cfg.data.verify_images == "off" and cfg.data.hflip is False
    with pytest.raises(C.ConfigError, match=r"data\.hflip.*expected true/false, got 'yes'"):
        C.load_config([], ["data.hflip=yes"])


def test_integral_numbers_for_integer_keys():
    assert C.load_config([], ["train.steps=1e5"]).train.steps == 100000
    assert C.load_config([], ["train.steps=100_000"]).train.steps == 100000
    with pytest.raises(C.ConfigError, match=r"train\.steps.*integer"):
        C.load_config([], ["train.steps=1.5"])
    # Strings that merely look like exponents stay strings.
    assert C.parse_override("a=1e") == {"a": "1e"} and C.parse_override("a=e5") == {"a": "e5"}


@pytest.mark.parametrize("override, needle", [
    ("train.stepz=3", "train.stepz"),
    ("model.backbone.depth=51", "model.backbone.depth"),
    ("model.backbone.norm=layer_norm", "model.backbone.norm"),
    ("train.steps=ten", "train.steps"),
    ("train.hflip=true", "train.hflip"),
    ("loss.focal_alpha=1.5", "loss.focal_alpha"),
    ("matcher.negative_threshold=0.6", "matcher.negative_threshold"),
    ("box_coder.weights=[1, 2, 3]", "box_coder.weights"),
    ("data.short_side=64", "data.short_side"),
])
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(C.ConfigError, match=needle.replace(".", r"\.")):
        C.load_config([], [override])


def test_bad_files(tmp_path):
    with pytest.raises(C.ConfigError, match="not found"):
        C.load_config([str(tmp_path / "missing.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(C.ConfigError, match="bad.yaml"):
        C.load_config([str(bad)])
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("model:\n  fpn:\n    chanels: 3\n")
    with pytest.raises(C.ConfigError, match=r"unknown\.yaml.*model\.fpn\.chanels"):
        C.load_config([str(unknown)])
    with pytest.raises(C.ConfigError, match="key=value"):
        C.load_config([], ["train.steps"])
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"train:\n  steps: \xff\n")
    with pytest.raises(C.ConfigError, match=r"latin1\.yaml is not UTF-8 text \(byte 0xff"):
        C.load_config([str(latin1)])
    with pytest.raises(C.ConfigError, match="cannot be read: Is a directory"):
        C.load_config([str(tmp_path)])
    with pytest.raises(C.ConfigError, match="data.train_json/train_images': give both"):
        C.load_config([], ["data.kind=coco", "data.train_json=a.json"])
    # No paths at all is a valid config (an imported COCO model evaluates with val paths
    # given later); training or evaluation without them names the missing key.
    from retinamask_tf.data import pipeline
    config = C.load_config([], ["data.kind=coco"])
    with pytest.raises(C.ConfigError, match="'data.train_json' .* required for training"):
        pipeline.load_splits(config.data)
    with pytest.raises(C.ConfigError, match="'data.val_json' .* required for evaluation"):
        pipeline.load_val(config.data, [])


def test_a_schedule_that_cannot_happen_is_refused_with_the_numbers(tmp_path):
    """Warm-up or rate drops at or past train.steps are refused, naming the key, the values
    and drops scaled to the run; a later file that fixes an earlier one's schedule is
    not blamed on the earlier one."""
    with pytest.raises(C.ConfigError, match=re.escape(
            "'train.lr_drop_steps': [90000, 120000] has drops at [90000, 120000], not below "
            "train.steps=20000") + ".*train.lr_drop_steps=\\[13333, 17778\\]"):
        C.load_config(["configs/coco_r50_fpn.yaml"], ["train.steps=20000"])
    with pytest.raises(C.ConfigError, match=r"'train.lr_drop_steps'.*drops at \[80\]"):
        C.load_config([], ["train.steps=80", "train.warmup_steps=10", "train.lr_drop_steps=[40, 80]"])
    with pytest.raises(C.ConfigError, match=r"'train.warmup_steps': 500 is not below train.steps=100"):
        C.load_config([], ["train.steps=100", "train.lr_drop_steps=[]"])
    ok = C.load_config(["configs/coco_r50_fpn.yaml"], [
        "train.steps=20000", "train.lr_drop_steps=[13333, 17778]"])
    assert ok.train.lr_drop_steps == (13333, 17778)
    short = tmp_path / "short.yaml"
    short.write_text("train:\n  steps: 100\n")
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("train:\n  warmup_steps: 10\n  lr_drop_steps: [50]\n")
    assert C.load_config([str(short), str(fixed)]).train.warmup_steps == 10
    with pytest.raises(C.ConfigError, match=f"^{re.escape(str(short))}: config key 'train.warmup_steps'"):
        C.load_config([str(short)])


def test_replace_with_dotted_keys():
    c = C.replace(C.ExperimentConfig(), **{"model.num_classes": 3, "train.steps": 5,
                                           "train.warmup_steps": 0, "train.lr_drop_steps": ()})
    assert c.model.num_classes == 3 and c.train.steps == 5
    assert C.ExperimentConfig().model.num_classes is None


def test_shipped_configs_load():
    import glob
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = sorted(glob.glob(os.path.join(root, "configs", "*.yaml")))
    assert len(paths) >= 3
    for path in paths:
        C.load_config([path])


def test_multi_scale_and_padding_keys():
    c = C.load_config([], ["data.train_short_sides=[640, 800, 1000]", "data.scale_jitter=[0.8, 1.25]",
                           "data.padded_size=[896, 1408]"])
    assert c.data.train_short_sides == (640, 800, 1000) and c.data.scale_jitter == (0.8, 1.25)
    assert c.image_size == (896, 1408)
    assert C.load_config([], []).image_size == (1408, 1408)  # square of long_side 1333
    for bad, key in ((["data.train_short_sides=[2000]"], "data.train_short_sides"),
                     (["data.padded_size=[900, 1408]"], "data.padded_size"),
                     (["data.scale_jitter=[1.2, 0.8]"], "data.scale_jitter")):
        with pytest.raises(C.ConfigError, match=key):
            C.load_config([], bad)


def test_pad_stride():
    """Padded sizes are multiples of data.pad_stride: 128 (the released code's) by default,
    any multiple of 32 on request."""
    assert C.load_config([], ["data.pad_stride=32"]).image_size == (1344, 1344)
    c = C.load_config([], ["data.pad_stride=32", "data.padded_size=[800, 1344]"])
    assert c.image_size == (800, 1344)
    with pytest.raises(C.ConfigError, match="data.padded_size.*data.pad_stride = 128"):
        C.load_config([], ["data.padded_size=[800, 1344]"])
    with pytest.raises(C.ConfigError, match="data.pad_stride"):
        C.load_config([], ["data.pad_stride=48"])


def test_config_reference_is_current_and_every_key_documented():
    """docs/config.md is what the schema generates, and no key lacks its sentence."""
    import dataclasses
    import typing

    from retinamask_tf.config import docs, schema
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(repo, "docs", "config.md")) as fh:
        assert fh.read() == docs.markdown(), "run: python -m retinamask_tf.config.docs"

    def leaves(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for fld in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[fld.name]):
                yield from leaves(hints[fld.name], f"{prefix}{fld.name}.")
            else:
                yield prefix + fld.name, fld.metadata.get("doc")

    keys = dict(leaves(schema.ExperimentConfig))
    assert len(keys) > 90 and all(keys.values()), [k for k, d in keys.items() if not d]


@pytest.mark.parametrize("key,bad", [
    ("anchors.anchor_scale", 0), ("data.shuffle_buffer", 0), ("data.num_parallel_calls", 0),
    ("model.head.channels", 0), ("box_coder.scale_clip", -1), ("loss.box_weight", -0.5),
    ("train.warmup_steps", -1), ("train.warmup_factor", 0), ("train.lr_drop_factor", 2),
    ("train.momentum", 1.0), ("train.weight_decay", -1e-4), ("train.clip_grad_norm", 0),
    ("train.keep_checkpoints", 0), ("eval.batch_size", 0), ("eval.max_images", 0),
    ("data.builtin.min_object_size", 0), ("train.lr_drop_steps", "[0, 10]")])
def test_numeric_keys_are_checked(key, bad):
    with pytest.raises(C.ConfigError, match=re.escape(f"'{key}'")):
        C.load_config([], [f"{key}={bad}"])


def test_dead_keys_are_gone():
    with pytest.raises(C.ConfigError, match="unknown config key 'data.cache_decoded'"):
        C.load_config([], ["data.cache_decoded=false"])
