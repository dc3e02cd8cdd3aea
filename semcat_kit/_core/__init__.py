"""Internal plumbing shared by every layer: input contracts, atomic writes, memory release,
process groups, the streaming duplicate-id check.

``contracts`` (one coercion/validation rule per input kind, one device rule), ``io`` (atomic files
and folders), ``digest`` (the one file digest),
``memory`` (bounded heaps, returning freed memory), ``distributed`` (one process or many under
``torchrun``), ``seen_ids`` (ids seen so far in a stream, as sorted hashes).
May import: nothing from semcat_kit outside ``_core``.
"""
