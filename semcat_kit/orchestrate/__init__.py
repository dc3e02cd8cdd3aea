"""The one flow: catalog -> taxonomy -> encoders -> embeddings -> neighbours -> split -> suite.

``config`` (``PipelineConfig``, the catalog column mapping, the YAML schema of ``semcat`` configs and
its defaults), ``pipeline`` (``Pipeline``: every ``semcat`` command and the ``Workspace`` run one),
``catalog_share`` (one process's share of a catalog file, streamed), ``workspace`` (``Workspace``: a
``Pipeline`` with a work folder, the notebooks' suites and peers kept on disk).
May import: every layer below it.
"""
