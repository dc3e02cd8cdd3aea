"""semcat_kit: categorize products into large category hierarchies, and make mistakes less embarrassing."""
from .taxonomy import Taxonomy

from . import datasets
from .datasets import load_catalog, load_fashion, load_fashion_tutorial, load_google_taxonomy
from . import encoders
from .embeddings import Embeddings, encode_catalog
from . import similarity, soft_labels, losses
from . import metrics
from .metrics import evaluate
from .model import FusionHead
from .training import TrainConfig, TrainRun, train
from .splits import split
from .comparison import compare, default_suite, format_table
from . import viz, widgets, inspection
from .export import export_head, load_head
from .predictor import Predictor
from .pipeline import Pipeline, PipelineConfig, PipelineError
from .workspace import Workspace

__version__ = "0.1.0"
