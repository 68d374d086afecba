"""RoI max pooling (ONNX MaxRoiPool): reference, kernel, TensorRT plugin, ONNX node."""
