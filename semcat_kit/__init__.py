"""semcat_kit: categorize products into large category hierarchies, and make mistakes less embarrassing.

The modules, one concept each, in the direction data flows (each module's docstring states its
contract: inputs, outputs, formulas, what it refuses and what it reports):

===============  =============================================================================
contracts        one coercion/validation rule per input kind (probabilities, labels,
                 neighbours, k, embeddings, device, precision), used by every module below
datasets         catalogs (CSV/DataFrame + images, Kaggle fashion layout, bundled tutorial)
taxonomy         the tree, LCA distances, conflict policy, the Google Product Taxonomy reader
encoders         frozen text/image encoders behind one registry: ``encoders.load(name)``
embeddings       ``encode_catalog`` streaming into the store (resumable), ``encode_into_store`` (fill it only),
                 ``encode_distributed`` (each torchrun rank its share); ``Embeddings`` (in memory,
                 or memory-mapped from a folder)
store            out-of-core embedding store: memory-mapped Arrow IPC shards keyed by content hash
similarity       label similarity (names, tree, class prototypes, blends) as sparse top-k ``Neighbors``
soft_labels      soft-target kinds (a registry: ``TARGET_KINDS``), curricula, taxonomy codes
losses           focal loss, sparse KL to soft targets, codes BCE
model            the fusion head
trainer          the training loop and its callbacks (early stopping, checkpoints, ...)
training         ``TrainConfig``, ``train()`` (one call over the trainer), ``TrainRun``
metrics          every metric in a registry (``METRICS``: formula, direction) and ``evaluate``
streaming        the same metrics from chunks of scores (no dense (N, C) array)
decoding         top-k and CRM decoding shared by evaluation and prediction
comparison       multi-seed comparison suites and their tables (baselines as rows, loss ablation)
baselines        what a user would pick instead: LogisticRegression, hiclass LCPPN on the embeddings
frequency        head / torso / tail buckets of classes and metrics per bucket
tuning           ``tune``: Optuna search for a stated objective with constraints
inspection       data prep behind the figures and widgets (label issues, confusions, maps)
viz, widgets     plotly figures and ipywidgets explorers
export           self-describing head folders; ``load_head``
predictor        ``Predictor.load(dir).predict(products)``
workspace        the notebooks' shared, cached state
distributed      one process or many under ``torchrun``
cli              ``semcat encode / train / predict / tune`` (also ``python -m semcat_kit``, ``torchrun``)
===============  =============================================================================

Public functions named like their module (``sk.train``, ``sk.compare``) live in modules named
for the concept (``training``, ``comparison``), so no function hides a module.
"""
from .taxonomy import Taxonomy

from . import datasets
from .datasets import load_catalog, load_fashion, load_fashion_tutorial, load_google_taxonomy
from . import encoders
from .embeddings import Embeddings, StoreFill, encode_catalog, encode_distributed, encode_into_store
from . import store
from . import similarity, soft_labels, losses
from . import metrics
from .metrics import evaluate
from .model import FusionHead
from .training import TrainConfig, TrainRun, train
from .splits import split
from . import baselines
from .baselines import HiClassBaseline, LogisticBaseline
from .comparison import baseline_suite, compare, default_suite, format_table, loss_suite
from . import frequency
from . import viz, widgets, inspection
from . import tuning
from .tuning import tune
from . import contracts, decoding, trainer, distributed, store, streaming
from .export import export_head, load_head
from .predictor import Predictor
from .pipeline import Pipeline, PipelineConfig, PipelineError
from .workspace import Workspace

__version__ = "0.1.0"
