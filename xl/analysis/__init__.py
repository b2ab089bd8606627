"""Stage 4, what the chapters measure on the models: representational similarity, language separability,
weight spectra, translation quality and source dependence, and the tables that run them over models."""
