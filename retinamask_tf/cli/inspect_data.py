"""--mode=inspect_data: statistics, anchor coverage, plots and drawings of both splits."""

import os

from retinamask_tf.data import inspector, pipeline


def run(config, out_dir):
    """Both splits' statistics, plots and drawings under ``out_dir/<split>/``."""
    train, val = pipeline.load_splits(config.data)
    for name, ds in (("train", train), ("val", val)):
        print(f"Data: {ds.summary()}")
        if ds.records is None:
            print("  (streamed from TFRecords or TFDS: not inspected here; inspect the COCO "
                  "JSON the TFRecords were written from)\n")
            continue
        out = os.path.join(out_dir, name)
        stats, paths = inspector.write_report(ds, config, out)
        print(inspector.format_report(stats))
        print(f"  stats        {paths['stats']}")
        print(f"  plots        {paths.get('plots', '(install matplotlib for the plots)')}")
        print(f"  drawn        {os.path.dirname(paths['drawn'][0]) if paths['drawn'] else '-'}/"
              f" ({len(paths['drawn'])} images with their boxes and masks)\n")
    return 0
