"""Data shipped with the package (the stdlib instruction set and its builder)."""
