"""A TFDS detection builder with ``coco/2017``'s features (image, image/filename,
image/id, objects/{bbox, label, is_crowd}), generated from a COCO JSON dataset: a real,
prepared TFDS dataset for the tests, without downloads."""

import os

import numpy as np
import tensorflow_datasets as tfds

from retinamask_tf.data import coco

# Set by ``prepare`` before building: split name -> (json, image folder); label names.
SPLITS = {}
NAMES = []


class ShapesDetection(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "image/filename": tfds.features.Text(),
            "image/id": np.int64,
            "objects": tfds.features.Sequence({
                "bbox": tfds.features.BBoxFeature(),
                "label": tfds.features.ClassLabel(names=NAMES),
                "is_crowd": np.bool_,
            }),
        }))

    def _split_generators(self, dl_manager):
        return {name: self._generate_examples(*paths) for name, paths in SPLITS.items()}

    def _generate_examples(self, json_path, image_dir):
        # The file's own bytes are stored (the Image feature keeps a JPEG as it is).
        for r in coco.load_coco(json_path, image_dir, crowd="ignore").records:
            size = np.array([r.height, r.width, r.height, r.width], np.float32)
            yield r.image_id, {
                "image": r.path, "image/filename": os.path.basename(r.path),
                "image/id": r.image_id,
                "objects": {"bbox": (r.boxes / size).astype(np.float32),
                            "label": r.classes.astype(np.int64), "is_crowd": r.is_crowd}}


def prepare(data_dir, splits):
    """Builds ``shapes_detection`` into ``data_dir`` from {split: (json, images)}; the label
    names are the first split's categories (contiguous index = label)."""
    SPLITS.clear()
    SPLITS.update(splits)
    first = coco.load_coco(*next(iter(splits.values())))
    NAMES[:] = first.class_names
    builder = ShapesDetection(data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return "shapes_detection"
