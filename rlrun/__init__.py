"""rlrun: one Kubernetes object for a whole RL post-training run, and the runtime its pods run."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rlrun")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+source"
