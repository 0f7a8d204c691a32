"""metarl: fast PyTorch implementations of context-based meta-RL and the task families of
VATE/variBAD, TESP, PEARL and structured-latent PEARL.

``import metarl`` registers every task family's gymnasium env under ``metarl/<Name>-v0``.
"""
from metarl.envs import FAMILY_NAMES, get_family

__version__ = "0.1.0"
__all__ = ["FAMILY_NAMES", "__version__", "get_family"]
