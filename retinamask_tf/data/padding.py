"""Fixed-size object rows of every source (COCO records, TFRecords, TFDS), in tf.data."""

import tensorflow as tf


def keep_largest_padded(boxes, max_instances, columns):
    """The ``max_instances`` largest objects (in their original order), zero-padded.


    Args:
      boxes: [n, 4] yxyx (any unit; the area ranks the objects).
      max_instances: M, static python int.
      columns: name -> (tensor [n, ...], pad value): per-object values kept alongside.
    Returns:
      (boxes [M, 4], {name: [M, ...]}, valid [M] bool).
    """
    n = tf.shape(boxes)[0]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = tf.sort(tf.math.top_k(area, k=tf.minimum(n, max_instances)).indices)
    k = tf.shape(keep)[0]

    def take(t, value):
        t = tf.gather(t, keep)
        paddings = tf.concat([[[0, max_instances - k]], tf.zeros([tf.rank(t) - 1, 2], tf.int32)], 0)
        out = tf.pad(t, paddings, constant_values=value)
        return tf.ensure_shape(out, [max_instances] + t.shape[1:].as_list())

    kept = {name: take(t, value) for name, (t, value) in columns.items()}
    return take(boxes, 0.0), kept, tf.range(max_instances) < k
