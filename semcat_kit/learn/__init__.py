"""Training heads on embeddings.

``losses`` (focal, sparse KL, codes BCE), ``model`` (the fusion head), ``trainer`` (the minibatch loop
and its callbacks), ``config`` (``TrainConfig`` and ``resolve``, the one budget decision), ``solver``
(batched L-BFGS over stacked heads), ``training`` (``train``, ``TrainRun``, the solver choice),
``estimator`` (``SemcatClassifier``, the scikit-learn estimator over ``train``, and ``cross_val_proba``).
May import: ``_core``, ``datasets``, ``encode``, ``labels``, ``judge``.
"""
