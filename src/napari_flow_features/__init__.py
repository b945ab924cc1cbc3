"""napari-flow-features: motion features from video (optical flow → I3D → post-encoders).

The public names below are importable from the package itself and load lazily (``lazy_loader``):
``import napari_flow_features`` takes milliseconds and imports no TensorFlow, Keras, OpenCV, PyAV
or napari; the module holding a name is imported the first time the name is used. The list is kept
once, in ``__init__.pyi``, which editors and type checkers read too.

Optical flow
    :class:`OpticalFlowComputer`, :func:`compute_flow`, :func:`preprocess_flow`,
    :class:`OpticalFlowSequenceLoader`, :func:`create_sequence_batch`.
Configuration (immutable, validated; docs/configuration.md)
    :class:`ExtractorConfig`, :class:`WeightsConfig`, :class:`ExtractionSettings`.
Encoder and model registry
    :class:`DynamicFeatureExtractor`, :class:`ModelSerializer`.
Extraction
    :func:`extract_features`, :func:`extract_frame`, :class:`FeatureResult`,
    :func:`extract_many` (many videos on Dask) and how it runs, :class:`BatchRun`.
Post-encoders and the per-frame row rule
    :func:`gap`, :func:`sample_point`, :func:`assign_frames`, :func:`interpolate_time`.
Analysis
    :class:`FeatureVisualization`, :class:`FeatureExtractorEvaluator`,
    :func:`write_evaluation_report`.
Reading and writing
    :func:`open_video`, :func:`write_video`, :func:`read_flow`, :func:`write_flo`,
    :func:`write_flow_npy`, :func:`read_table`, :func:`write_table`, :func:`read_tracks`.
Sample data
    :func:`make_whisker_sample`, :func:`save_whisker_sample`.
Errors
    :class:`BadInputError`, :class:`CorruptFileError`, :class:`CancelledError`.

Examples
--------
>>> import napari_flow_features as nff
>>> flow = nff.OpticalFlowComputer(method="farneback").compute("video.mp4")  # doctest: +SKIP
"""

import lazy_loader as _lazy

__version__ = "0.1.0"

__getattr__, __lazy_dir__, _lazy_all = _lazy.attach_stub(__name__, __file__)

__all__ = [*_lazy_all, "__version__"]


def __dir__() -> list[str]:
    """The public names (lazy ones included) and ``__version__``."""
    return list(__all__)
