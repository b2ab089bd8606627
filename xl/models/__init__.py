"""Stage 2, the models: the registry of every model of the book, encoders and their per-layer
representations, tokenizers, the store of trained lab models."""
