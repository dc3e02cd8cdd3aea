"""What an analyst looks at: data prep for figures, plotly figures, ipywidgets explorers.

``inspection`` (label issues, confusions, projections: arrays and DataFrames only), ``viz`` (plotly
figures), ``widgets`` (``MispredictionBrowser``, ``ConfusionNeighborhood``).
May import: ``_core``, ``datasets``, ``labels``, ``judge``, ``learn`` (the estimator behind cross-validated
label issues).
"""
