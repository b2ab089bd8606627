"""Stage 6, the book: the notebook runner and its cache key, the `xl` command line, Colab support, figures,
offline explorers and the conclusions drawn from every chapter's tables."""
