"""Internal plumbing shared by every layer: input contracts, atomic writes, memory release,
process groups, the one item-id rule.

``contracts`` (one coercion/validation rule per input kind, one device rule, one item-id rule:
``check_unique_ids``), ``io`` (atomic files
and folders), ``digest`` (the one file digest),
``memory`` (bounded heaps, returning freed memory), ``distributed`` (one process or many under
``torchrun``), ``seen_ids`` (ids seen so far in a stream, as sorted hashes), ``threads`` (torch
threads on a shared machine: ``SEMCAT_THREADS``, the OpenMP wait policy), ``chunks`` (rows a streaming
stage handles at a time).
May import: nothing from semcat_kit outside ``_core``.
"""
