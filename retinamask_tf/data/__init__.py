"""Datasets: COCO JSON reader, the built-in generated dataset, parser and tf.data pipeline."""
