"""Models of either framework side by side: model files of every format, ONNX import,
eval-mode parity, per-layer outputs and the per-layer diff."""
