"""Fine-tuning methods, one module each; importing this package registers them all in `METHODS`."""

from sift_bench.methods import adapter, classifier_only, full, lora, random_sparse, sift  # noqa: F401  (registers)
from sift_bench.methods.base import METHODS, Method, MethodOptions, PrepareContext, Prepared

__all__ = ["METHODS", "Method", "MethodOptions", "PrepareContext", "Prepared"]
