"""The I3D encoder (Keras/TensorFlow): model, checkpoint import, registry.

TensorFlow is imported lazily: importing this package alone does not.
"""
