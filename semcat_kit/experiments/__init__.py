"""Comparisons, peers and tuning over many trained heads.

``comparison`` (multi-seed suites and their tables), ``baselines`` (LogisticRegression, hiclass),
``tuning`` (Optuna search for a stated objective).
May import: every layer below ``see``.
"""
