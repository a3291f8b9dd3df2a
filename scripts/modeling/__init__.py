"""Making a checkpoint: ``train``, ``calibrate`` (temperature), ``evaluate`` (images, videos, spans,
explanations); ``data`` and ``metrics`` are their libraries.
"""
