"""The paper's evidence for sparse fine-tuning, measurable on any model: loss landscape (Figure 2),
gradient quasi-sparsity (Figure 3(d)), selection stability (Figure 4) and the memory model (Table 1).

Each analysis takes a model, an iterable of batches and `loss_fn(model, batch) -> scalar loss`, and returns
a pandas DataFrame; target modules use `sift.find_target_modules` semantics.
"""

from sift.analysis.landscape import filter_normalized_direction, interpolation_landscape, loss_landscape
from sift.analysis.memory import (
    PAPER_TABLE1,
    MemoryPrediction,
    MemorySetup,
    MethodSpec,
    llama_7b,
    measured_activation_bytes,
    measured_state_bytes,
    predict_memory,
    prediction_table,
    table1_comparison,
)
from sift.analysis.quasi_sparsity import DEFAULT_FRACTIONS, gradient_shares, quasi_sparsity, topk_shares
from sift.analysis.stability import selection_stability

__all__ = [
    "DEFAULT_FRACTIONS",
    "PAPER_TABLE1",
    "MemoryPrediction",
    "MemorySetup",
    "MethodSpec",
    "filter_normalized_direction",
    "gradient_shares",
    "interpolation_landscape",
    "llama_7b",
    "loss_landscape",
    "measured_activation_bytes",
    "measured_state_bytes",
    "predict_memory",
    "prediction_table",
    "quasi_sparsity",
    "selection_stability",
    "table1_comparison",
    "topk_shares",
]
