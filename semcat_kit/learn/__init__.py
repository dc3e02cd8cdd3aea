"""Training heads on embeddings.

``losses`` (focal, sparse KL, codes BCE), ``model`` (the fusion head), ``trainer`` (the minibatch loop
and its callbacks), ``training`` (``TrainConfig``, ``train``, ``TrainRun``), ``estimator`` (``SemcatClassifier``,
the scikit-learn estimator over ``train``, and ``cross_val_proba``).
May import: ``_core``, ``datasets``, ``encode``, ``labels``, ``judge``.
"""
