"""RoIAlign (ONNX RoiAlign, opset 16): reference, kernel, TensorRT plugin, ONNX node."""
