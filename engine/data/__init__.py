"""Training data: the synthetic corpus and the preparation of talking-head video."""
