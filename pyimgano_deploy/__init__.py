"""pyimgano-deploy: industrial visual anomaly detection from training to deployment.

The package is split so that the runtime side (``inputs``, ``postprocess``, ``bundles``,
``runtimes``, ``datasets``) never imports torch or onnx; see ARCHITECTURE.md §2.
"""

from pyimgano_deploy._version import __version__

__all__ = ["__version__"]
