"""Normalisation layer choice shared by the backbone, FPN and heads."""

import keras

NORMS = ("frozen", "batch_norm", "sync_batch_norm", "group_norm", "none")


def make_norm(kind, channels, name):
    """A fresh normalisation layer, or None for ``"none"``.

    frozen: BatchNormalization that is never trained (runs in inference mode);
    batch_norm / sync_batch_norm: trained BN (sync: statistics across replicas);
    group_norm: 32 groups, or fewer when ``channels`` is small.
    """
    if kind == "none":
        return None
    if kind in ("frozen", "batch_norm", "sync_batch_norm"):
        layer = keras.layers.BatchNormalization(
            momentum=0.9, epsilon=1e-5, synchronized=(kind == "sync_batch_norm"), name=name)
        if kind == "frozen":
            layer.trainable = False
        return layer
    if kind == "group_norm":
        groups = 32
        while channels % groups:
            groups //= 2
        return keras.layers.GroupNormalization(groups=groups, epsilon=1e-5, name=name)
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")
