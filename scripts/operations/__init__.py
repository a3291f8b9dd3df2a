"""Serving a trained checkpoint: archive it (``archive``; ``archives`` is the library), choose and check its
precision (``precision``), run TorchServe (``serve``; ``torchserve`` is the library), bundle it for KServe.
"""
