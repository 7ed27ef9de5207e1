"""Deployment to edge devices: ONNX export, INT8 quantisation, pruning and the size / latency / mAP benchmark."""
