"""Checkpoint tracking of sub-layers held in Python lists and dicts.

Under Keras 3 (TF backend), layers kept in a list or dict attribute count in
``layer.weights`` and are trained, but are not children in tf.train.Checkpoint's
object graph: a checkpoint of the model alone silently misses their variables
(a checkpoint that also holds the optimizer reaches them through it, which is
why training resume worked). Giving each one a named attribute fixes the
object graph; ``weights`` stays free of duplicates.
"""


def track_sublayers(owner, prefix, layers):
    """Sets ``owner.<prefix>_<key>`` for every non-None layer of a list or dict."""
    items = layers.items() if isinstance(layers, dict) else enumerate(layers)
    for key, layer in items:
        if layer is not None:
            setattr(owner, f"{prefix}_{str(key).lower()}", layer)
