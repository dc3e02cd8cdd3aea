"""Label similarity and soft targets.

``similarity`` (sparse top-k label neighbours from names, the tree, class prototypes, blends),
``soft_labels`` (target kinds in a registry, curricula, taxonomy codes).
May import: ``_core``, ``datasets``.
"""
