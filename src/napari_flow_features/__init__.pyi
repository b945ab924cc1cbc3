# The public API of napari_flow_features, listed once. At run time ``__init__.py`` hands this file
# to lazy_loader.attach_stub, which imports each name's module on first use; editors and type
# checkers read the same imports. Keep ``__all__`` equal to the imported names (a test checks).

from .analysis.evaluation import FeatureExtractorEvaluator
from .analysis.report import write_evaluation_report
from .analysis.visualization import FeatureVisualization
from .config import ExtractionSettings, ExtractorConfig, WeightsConfig
from .errors import BadInputError, CancelledError, CorruptFileError
from .extract.batch import extract_many
from .extract.pipeline import FeatureResult, extract_features, extract_frame
from .extract.post_encoders import assign_frames, gap, interpolate_time, sample_point
from .extract.tasks import BatchRun
from .flow.compute import OpticalFlowComputer, compute_flow
from .flow.sequences import OpticalFlowSequenceLoader, create_sequence_batch, preprocess_flow
from .io.flow_files import read_flow, write_flo, write_flow_npy
from .io.poses import read_tracks
from .io.tables import read_table, write_table
from .io.video import open_video, write_video
from .model.extractor import DynamicFeatureExtractor
from .model.registry import ModelSerializer
from .sample import make_whisker_sample, save_whisker_sample

__version__: str

__all__ = [
    "BadInputError",
    "BatchRun",
    "CancelledError",
    "CorruptFileError",
    "DynamicFeatureExtractor",
    "ExtractionSettings",
    "ExtractorConfig",
    "FeatureExtractorEvaluator",
    "FeatureResult",
    "FeatureVisualization",
    "ModelSerializer",
    "OpticalFlowComputer",
    "OpticalFlowSequenceLoader",
    "WeightsConfig",
    "__version__",
    "assign_frames",
    "compute_flow",
    "create_sequence_batch",
    "extract_features",
    "extract_frame",
    "extract_many",
    "gap",
    "interpolate_time",
    "make_whisker_sample",
    "open_video",
    "preprocess_flow",
    "read_flow",
    "read_table",
    "read_tracks",
    "sample_point",
    "save_whisker_sample",
    "write_evaluation_report",
    "write_flo",
    "write_flow_npy",
    "write_table",
    "write_video",
]
