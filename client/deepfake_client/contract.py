"""The wire contract, as the client's public name for it: the very objects of ``deepfake_contract``.

The contract is one standard-library package (``contract/`` in the repository, ``deepfake-contract``
on pip) that the TorchServe handler, this client and the scripts import; this module re-exports it,
so ``deepfake_client.contract.Prediction is deepfake_contract.Prediction``.
"""

from deepfake_contract import *  # noqa: F403
from deepfake_contract import __all__  # noqa: F401
