"""How right and how wrong: decoders and metrics.

``decoding`` (top-k, CRM), ``hedging`` (the most specific taxonomy node at a calibrated precision),
``metrics`` (every metric with its formula and direction, ``evaluate``), ``streaming`` (the same
metrics from chunks of scores), ``frequency`` (head / torso / tail buckets), ``label_noise``
(injected label noise, detection precision / recall, cleanlab side by side).
May import: ``_core``, ``datasets``, ``labels``.
"""
