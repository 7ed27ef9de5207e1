"""The model side: the detection-engine interface and its implementations, training, hyper-parameter search."""
