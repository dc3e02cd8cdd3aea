"""The one flow: catalog -> taxonomy -> encoders -> embeddings -> neighbours -> split -> suite.

``config`` (``PipelineConfig``, the catalog column mapping, the YAML schema of ``semcat`` configs and
its defaults), ``pipeline`` (``Pipeline``), ``workspace`` (the notebooks' ``Workspace``).
May import: every layer below it.
"""
