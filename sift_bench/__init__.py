"""SIFT-Bench: benchmark sparse fine-tuning against other parameter-efficient methods."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sift-bench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"
