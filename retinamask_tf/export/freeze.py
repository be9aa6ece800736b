"""A tf.function frozen for the converters (TFLite, OpenVINO)."""

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2


def frozen_concrete_function(fn):
    """``fn`` (a ``tf.function`` with an input signature, returning a dict) with its
    variables frozen into constants, as a concrete function with ``fn``'s input signature
    and dict outputs.

    Left to the TFLite converter, Keras 3's variables stay resource variables (VAR_HANDLE)
    that read back as zeros. The frozen function returns its outputs flat (in tf.nest
    order: sorted keys) and has no structured input signature, which OpenVINO's converter
    reads; so it is wrapped again, keeping the input and output names.
    """
    concrete = fn.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    names = sorted(concrete.structured_outputs)

    @tf.function(input_signature=fn.input_signature)
    def serve(*args):
        return dict(zip(names, frozen(*args)))

    return serve.get_concrete_function()
