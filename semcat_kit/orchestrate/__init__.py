"""The one flow: catalog -> taxonomy -> encoders -> embeddings -> neighbours -> split -> suite.

``pipeline`` (``Pipeline``, ``PipelineConfig``), ``workspace`` (the notebooks' ``Workspace``).
May import: every layer below it.
"""
