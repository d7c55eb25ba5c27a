"""`random`: the engine with uniformly random entries instead of top-|gradient| (the paper's Section 5.3.1)."""

from __future__ import annotations

from sift_bench.methods.base import METHODS
from sift_bench.methods.sift import Sift, SparseOptions


class RandomOptions(SparseOptions):
    pass


class RandomSparse(Sift):
    name = "random"
    options = RandomOptions
    selection = "random"


METHODS.add(RandomSparse.name, RandomSparse())
