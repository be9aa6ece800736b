"""--mode=make_tfrecords: both splits (images checked first) as sharded TFRecords."""

import os

from retinamask_tf import config as config_lib
from retinamask_tf.data import pipeline, tfrecord
from retinamask_tf.progress import Progress


def run(config, out_dir, num_shards=8):
    """Both splits as ``out_dir/<split>-*.tfrecord`` (+ ``<split>-meta.json``)."""
    # Always from the JSON (a data.train_tfrecord in the config would make train a
    # TFRecord source, which has no records to write).
    config = config_lib.replace(config, **{"data.train_tfrecord": None})
    if config.data.kind == "tfds":
        raise config_lib.ConfigError("config key 'data.kind': make_tfrecords writes a COCO "
                                     "JSON dataset; a TFDS dataset is already stored as records")
    train, val = pipeline.load_splits(config.data)
    for name, ds in (("train", train), ("val", val)):
        print(f"Data: {ds.summary()}")
        bar = Progress(len(ds.records), unit="image")
        meta = tfrecord.write_tfrecords(ds, os.path.join(out_dir, name), num_shards,
                                        progress=bar.update)
        print(f"  {name:5s} {meta}")
    print("Train from them with: --override "
          f"data.train_tfrecord={os.path.join(out_dir, 'train-meta.json')}")
    return 0
