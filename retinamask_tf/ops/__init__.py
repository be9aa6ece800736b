"""Pure tensor functions (TensorFlow only): no Keras layers, no config objects."""
