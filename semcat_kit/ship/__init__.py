"""Trained heads out of the process and back: export folders and prediction.

``export`` (self-describing head folders, ``load_head``), ``predictor`` (``Predictor``, chunked
prediction to CSV/Parquet).
May import: ``_core``, ``datasets``, ``encode``, ``labels``, ``judge``, ``learn``.
"""
