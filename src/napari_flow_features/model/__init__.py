"""The I3D encoder (Keras/TensorFlow): model, checkpoint import, registry. Imports TensorFlow
lazily: importing this package alone does not.
"""
