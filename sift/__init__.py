"""SIFT: sparse increment fine-tuning, as a library for any PyTorch training loop."""
