"""Thin Keras layers over ``retinamask_tf.ops``."""
