"""TFRecords written from a COCO JSON give exactly the examples the JSON gives."""

import numpy as np
import pytest

from retinamask_tf.data import coco, pipeline, tfrecord


def _assert_same(a, b):
    for (fa, la), (fb, lb) in zip(a, b, strict=True):
        for key in fa:
            np.testing.assert_array_equal(fa[key].numpy(), fb[key].numpy(), err_msg=key)
        assert sorted(la) == sorted(lb)
        for key in la:
            np.testing.assert_array_equal(la[key].numpy(), lb[key].numpy(), err_msg=key)


@pytest.mark.parametrize("num_shards", [1, 3])
def test_tfrecords_equal_json(coco128, tmp_path, num_shards):
    """coco128 (polygons, crowd RLE, images with more than max_instances objects), with
    masks, evaluation order and a few shuffled, flipped training batches."""
    json_path, images = coco128
    ds = coco.load_coco(json_path, images, crowd="ignore")
    ds = type(ds)(**{**ds.__dict__, "records": ds.records[:20]})
    meta = tfrecord.write_tfrecords(ds, str(tmp_path / "coco128"), num_shards)
    source = tfrecord.load_source(meta)
    assert source.num_examples == 20 and len(source.files) == num_shards
    assert source.class_ids == ds.class_ids and source.has_masks
    kwargs = dict(image_size=(256, 256), short_side=192, long_side=256, max_instances=8,
                  mask_size=28)
    _assert_same(pipeline.build_dataset(ds, pipeline.InputSpec(4, training=False, **kwargs)),
                 pipeline.build_dataset(source, pipeline.InputSpec(4, training=False, **kwargs)))
    train = dict(training=True, shuffle_buffer=16, seed=5, **kwargs)
    _assert_same(pipeline.build_dataset(ds, pipeline.InputSpec(4, **train)).take(6),
                 pipeline.build_dataset(source, pipeline.InputSpec(4, **train)).take(6))


def test_missing_shard_and_meta_are_named(coco128, tmp_path):
    json_path, images = coco128
    ds = coco.load_coco(json_path, images)
    ds = type(ds)(**{**ds.__dict__, "records": ds.records[:4]})
    meta = tfrecord.write_tfrecords(ds, str(tmp_path / "x"), 2)
    with pytest.raises(coco.DatasetError, match="not found"):
        tfrecord.load_source(str(tmp_path / "nope-meta.json"))
    (tmp_path / "x-00001-of-00002.tfrecord").unlink()
    with pytest.raises(coco.DatasetError, match="x-00001-of-00002.tfrecord"):
        tfrecord.load_source(meta)


def test_tfrecords_of_the_earlier_json_format_read_the_same(coco128, tmp_path, monkeypatch):
    """Shards written before segmentations were packed hold each object's segmentation as
    JSON text (``null`` for none): they give the same masks as the JSON dataset."""
    import json

    from retinamask_tf.data.segmentations import unpack

    json_path, images = coco128
    ds = coco.load_coco(json_path, images, crowd="ignore")
    ds = type(ds)(**{**ds.__dict__, "records": ds.records[:8]})
    write = tfrecord.record_to_example

    def earlier_format(record):
        segs = [None if s is None or c else json.dumps([p.tolist() for p in unpack(s)]
                                                        if s[:1] == b"P" else unpack(s)).encode()
                for s, c in zip(record.segmentations, record.is_crowd)]
        example = write(record)
        field = example.features.feature["object/segmentation"].bytes_list
        del field.value[:]
        field.value.extend(b"null" if s is None else s for s in segs)
        return example

    monkeypatch.setattr(tfrecord, "record_to_example", earlier_format)
    source = tfrecord.load_source(tfrecord.write_tfrecords(ds, str(tmp_path / "old"), 2))
    spec = pipeline.InputSpec(4, (256, 256), 192, 256, 8, training=False, mask_size=28)
    _assert_same(pipeline.build_dataset(ds, spec), pipeline.build_dataset(source, spec))
