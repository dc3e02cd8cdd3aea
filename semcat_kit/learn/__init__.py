"""Training heads on embeddings.

``losses`` (focal, sparse KL, codes BCE), ``model`` (the fusion head), ``trainer`` (the minibatch loop
and its callbacks), ``training`` (``TrainConfig``, ``train``, ``TrainRun``).
May import: ``_core``, ``datasets``, ``encode``, ``labels``, ``judge``.
"""
