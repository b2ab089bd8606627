"""Stage 1, the data: the parallel corpora (the Bible, FLORES-200), language metadata, the lab tasks, their
metrics and a model-free baseline, XGLUE."""
