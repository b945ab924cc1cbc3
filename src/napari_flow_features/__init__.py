"""napari-flow-features: motion features from video (optical flow → I3D → post-encoders).

Importing the package is cheap: heavy libraries (TensorFlow, OpenCV, PyAV) load only when the
functions that need them run.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
