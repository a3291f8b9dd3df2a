"""Model code packed into the TorchServe archive: settings, preprocessing, checkpoints, calibration.

Training, calibration and evaluation scripts import these same modules, so serving never drifts
from how a checkpoint was trained.
"""
