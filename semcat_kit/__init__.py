"""semcat_kit: categorize products into large category hierarchies, and make mistakes less embarrassing.

The package is layered; each layer is a subpackage whose docstring says what lives there and what
it may import (arrows point down only):

===============  =============================================================================
``_core``        contracts (one coercion/validation rule per input kind, one device rule, one
                 item-id rule), atomic writes, the file digest, memory, process groups, seen ids
``datasets``     the problem report, the CSV reader, the chunked file reader, image files by id,
                 the catalog mapping, the product mapper, sampling, bundled catalogs, images, the
                 taxonomy tree, splits
``encode``       the encoder registry (``encoders.load(name)``), the out-of-core store,
                 ``Embeddings``, ``encode_catalog`` / ``encode_into_store``, ``encode_distributed``
``labels``       label similarity (sparse top-k ``Neighbors``) and soft-target kinds, curricula
``judge``        decoders (top-k, CRM, hedged at a calibrated precision), every metric in a
                 registry, streaming metrics, head / torso / tail buckets
``learn``        losses, the fusion head, the minibatch trainer, ``TrainConfig`` / ``train``,
                 ``SemcatClassifier`` (scikit-learn)
``experiments``  multi-seed comparison suites, peers (LogisticRegression, hiclass), tuning
``see``          tables behind the figures (``sk.see.mispredictions``, ...), plotly figures,
                 ipywidgets explorers
``ship``         exported head folders, ``Predictor``
``orchestrate``  ``PipelineConfig`` and the YAML schema, ``Pipeline`` (the one flow: every command
                 and the ``Workspace`` run it), ``Workspace`` (a ``Pipeline`` with a work folder)
``cli``          ``semcat encode / train / predict / tune``, one module per command: parse, call
                 the library, print
===============  =============================================================================

``import semcat_kit as sk`` is light: names are imported on first use (PEP 562), so
``import semcat_kit`` and ``semcat --help`` load no torch, plotly or ipywidgets. The module
namespaces the notebooks use (``sk.datasets``, ``sk.encoders``, ``sk.similarity``, ``sk.metrics``,
``sk.see``, ``sk.viz``, ...) and the functions and classes below are the public API (``__all__``).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__
from ._core.threads import set_wait_policy as _set_wait_policy

# torch's OpenMP threads sleep at barriers instead of spinning (must be set before torch loads
# libgomp; a value the user set is kept; SEMCAT_OMP_PASSIVE=0 leaves it alone): see _core/threads
_set_wait_policy()

#: public module namespaces: ``sk.<name>`` -> the module that holds the concept
_MODULES = {
    "contracts": "._core.contracts", "distributed": "._core.distributed",
    "datasets": ".datasets", "taxonomy": ".datasets.taxonomy", "images": ".datasets.images",
    "splits": ".datasets.splits",
    "encoders": ".encode.encoders", "store": ".encode.store", "embeddings": ".encode.embeddings",
    "similarity": ".labels.similarity", "soft_labels": ".labels.soft_labels",
    "decoding": ".judge.decoding", "metrics": ".judge.metrics", "streaming": ".judge.streaming",
    "frequency": ".judge.frequency", "hedging": ".judge.hedging", "label_noise": ".judge.label_noise",
    "losses": ".learn.losses", "model": ".learn.model", "trainer": ".learn.trainer",
    "training": ".learn.training", "estimator": ".learn.estimator",
    "comparison": ".experiments.comparison", "baselines": ".experiments.baselines",
    "tuning": ".experiments.tuning",
    "see": ".see", "viz": ".see.viz", "widgets": ".see.widgets",
    "export": ".ship.export", "predictor": ".ship.predictor",
    "pipeline": ".orchestrate.pipeline", "workspace": ".orchestrate.workspace",
    "cli": ".cli",
}
#: public functions and classes: ``sk.<name>`` -> the module that defines it
_NAMES = {
    "Taxonomy": ".datasets.taxonomy",
    "load_catalog": ".datasets.mapping", "load_fashion": ".datasets.bundled",
    "load_fashion_tutorial": ".datasets.bundled", "load_google_taxonomy": ".datasets.taxonomy",
    "split": ".datasets.splits",
    "Embeddings": ".encode.embeddings", "StoreFill": ".encode.encode",
    "encode_catalog": ".encode.encode", "encode_distributed": ".encode.sharded",
    "encode_into_store": ".encode.encode",
    "evaluate": ".judge.metrics",
    "calibrate_hedging": ".judge.hedging", "HedgeCalibration": ".judge.hedging",
    "FusionHead": ".learn.model",
    "TrainConfig": ".learn.config", "TrainRun": ".learn.training", "train": ".learn.training",
    "SemcatClassifier": ".learn.estimator",
    "LogisticBaseline": ".experiments.baselines", "HiClassBaseline": ".experiments.baselines",
    "baseline_suite": ".experiments.comparison", "compare": ".experiments.comparison",
    "default_suite": ".experiments.comparison", "format_table": ".experiments.comparison",
    "loss_suite": ".experiments.comparison",
    "tune": ".experiments.tuning",
    "export_head": ".ship.export", "load_head": ".ship.export", "Predictor": ".ship.predictor",
    "Pipeline": ".orchestrate.pipeline", "PipelineConfig": ".orchestrate.config",
    "PipelineError": ".orchestrate.config", "Workspace": ".orchestrate.workspace",
}
__all__ = ["__version__", *_MODULES, *_NAMES]


def __getattr__(name: str):
    """Import a public module or name on first use (PEP 562) and keep it in the namespace."""
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name], __name__)
    elif name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name], __name__), name)
    else:
        raise AttributeError(f"module 'semcat_kit' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what static tools and IDEs see; nothing here runs
    from . import cli  # noqa: F401
    from ._core import contracts, distributed  # noqa: F401
    from .datasets import images, splits, taxonomy  # noqa: F401
    from .datasets.bundled import load_fashion, load_fashion_tutorial  # noqa: F401
    from .datasets.mapping import load_catalog  # noqa: F401
    from .datasets.splits import split  # noqa: F401
    from .datasets.taxonomy import Taxonomy, load_google_taxonomy  # noqa: F401
    from .encode import embeddings, encoders, store  # noqa: F401
    from .encode.embeddings import Embeddings  # noqa: F401
    from .encode.encode import StoreFill, encode_catalog, encode_into_store  # noqa: F401
    from .encode.sharded import encode_distributed  # noqa: F401
    from .experiments import baselines, comparison, tuning  # noqa: F401
    from .experiments.baselines import HiClassBaseline, LogisticBaseline  # noqa: F401
    from .experiments.comparison import (baseline_suite, compare, default_suite,  # noqa: F401
                                         format_table, loss_suite)
    from .experiments.tuning import tune  # noqa: F401
    from .judge import decoding, frequency, hedging, label_noise, metrics, streaming  # noqa: F401
    from .judge.hedging import HedgeCalibration, calibrate_hedging  # noqa: F401
    from .judge.metrics import evaluate  # noqa: F401
    from .labels import similarity, soft_labels  # noqa: F401
    from .learn import estimator, losses, model, trainer, training  # noqa: F401
    from .learn.estimator import SemcatClassifier  # noqa: F401
    from .learn.model import FusionHead  # noqa: F401
    from .learn.config import TrainConfig  # noqa: F401
    from .learn.training import TrainRun, train  # noqa: F401
    from .orchestrate import pipeline, workspace  # noqa: F401
    from .orchestrate.config import PipelineConfig, PipelineError  # noqa: F401
    from .orchestrate.pipeline import Pipeline  # noqa: F401
    from .orchestrate.workspace import Workspace  # noqa: F401
    from . import see  # noqa: F401
    from .see import viz, widgets  # noqa: F401
    from .ship import export, predictor  # noqa: F401
    from .ship.export import export_head, load_head  # noqa: F401
    from .ship.predictor import Predictor  # noqa: F401
