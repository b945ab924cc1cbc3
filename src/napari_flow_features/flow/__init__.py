"""Optical flow: computation, I3D preprocessing, windows, and visualisation. No Qt, no TensorFlow."""
