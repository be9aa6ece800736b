import numpy as np
import tensorflow as tf
from PIL import Image

from retinamask_tf.data import coco, coco_tensors, parser, pipeline
from retinamask_tf.ops import resize


def _image(tmp_path, h, w):
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2] = 255  # left half white
    path = str(tmp_path / f"img_{h}x{w}.png")
    Image.fromarray(arr).save(path)
    return path


def test_resize_and_pad_geometry(tmp_path):
    img = parser.decode_image(_image(tmp_path, 300, 500))
    out, info = resize.resize_and_pad(img, 256, 384, (384, 384))
    # scale = min(256/300, 384/500) = 0.768 -> 230 x 384
    np.testing.assert_allclose(info.numpy(), [300, 500, 230 / 300, 384 / 500], rtol=1e-6)
    assert out.shape == (384, 384, 3)
    o = out.numpy()
    assert (o[230:] == 0).all() and o[:230, :10].min() > 250 and o[:230, -10:].max() < 5
    boxes = parser.scale_boxes(tf.constant([[30.0, 50.0, 60.0, 250.0]]), info).numpy()
    np.testing.assert_allclose(boxes, [[23.0, 38.4, 46.0, 192.0]], rtol=1e-5)


def test_hflip_mirrors_valid_region_and_boxes(tmp_path):
    img = parser.decode_image(_image(tmp_path, 100, 200))
    out, info = resize.resize_and_pad(img, 100, 200, (256, 256))
    boxes = tf.constant([[10.0, 0.0, 20.0, 50.0]])
    flipped, fboxes = parser.hflip(out, boxes, info)
    f = flipped.numpy()
    assert f[:100, :10].max() < 5 and f[:100, 190:200].min() > 250  # white half now on the right
    assert (f[:, 200:] == 0).all() and (f[100:] == 0).all()  # padding untouched
    np.testing.assert_allclose(fboxes.numpy(), [[10.0, 150.0, 20.0, 200.0]])


def test_pipeline_batches(tiny_shapes):
    ds = coco.load_coco(tiny_shapes["train_json"], tiny_shapes["train_images"])
    data = pipeline.build_dataset(ds, pipeline.InputSpec(4, (128, 128), 128, 128, 10, training=True, seed=1))
    features, labels = next(iter(data))
    assert features["images"].shape == (4, 128, 128, 3)
    assert features["image_info"].shape == (4, 4)
    assert labels["gt_boxes"].shape == (4, 10, 4) and labels["gt_valid"].dtype == tf.bool
    valid = labels["gt_valid"].numpy()
    boxes = labels["gt_boxes"].numpy()
    assert valid.any() and (boxes[~valid] == 0).all()
    assert (boxes[valid][:, 2] > boxes[valid][:, 0]).all() and boxes.max() <= 128
    # Eval order is the file order and keeps the partial batch.
    val = coco.load_coco(tiny_shapes["val_json"], tiny_shapes["val_images"])
    ids = [int(i) for f, _ in pipeline.build_dataset(val, pipeline.InputSpec(5, (128, 128), 128, 128, 10, False))
           for i in f["image_id"].numpy()]
    assert ids == [r.image_id for r in val.records]


def test_truncation_keeps_largest_boxes():
    rec = coco.ImageRecord(1, "x.jpg", 100, 100,
                           boxes=np.array([[0, 0, 5, 5], [0, 0, 50, 50], [0, 0, 20, 20]], np.float32),
                           classes=np.array([0, 1, 2], np.int32), is_crowd=np.zeros(3, bool),
                           ann_ids=np.arange(3), segmentations=[None] * 3)
    assert coco_tensors.truncated_images([rec], 2) == [(1, "x.jpg", 3)]  # id, file, count
    assert coco_tensors.truncated_images([rec], 3) == []
    example = next(iter(coco_tensors.records_to_dataset([rec], 2)))
    np.testing.assert_array_equal(example["classes"], [1, 2])  # file order, largest two


def test_multi_scale_and_jitter_are_seeded_and_fit(tiny_shapes):
    """Training short sides are drawn from the list (per image, from the seed and position),
    jitter scales within its range, and every image fits the (landscape) padded size."""
    from retinamask_tf.data import coco, pipeline

    ds = coco.load_coco(tiny_shapes["train_json"], tiny_shapes["train_images"])

    def sizes(**kwargs):
        data = pipeline.build_dataset(ds, pipeline.InputSpec(8, (128, 256), 96, 256, 6, training=True, seed=1, shuffle_buffer=4, **kwargs))
        infos = np.concatenate([f["image_info"].numpy() for f, _ in data.take(6)])
        return np.round(infos[:, 0] * infos[:, 2]), infos[:, 2]

    heights, _ = sizes(train_short_sides=(64, 96, 128))
    assert set(heights) == {64.0, 96.0, 128.0}  # 128x128 images: the short side decides
    again, _ = sizes(train_short_sides=(64, 96, 128))
    np.testing.assert_array_equal(heights, again)
    _, scales = sizes(scale_jitter=(0.5, 0.75))
    assert 96 / 128 * 0.5 - 1e-3 <= scales.min() and scales.max() <= 96 / 128 * 0.75 + 1e-3
    assert scales.std() > 0.01
    heights, _ = sizes(train_short_sides=(256,))  # would be 256 tall: fitted to 128
    assert set(heights) == {128.0}
