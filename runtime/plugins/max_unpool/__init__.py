"""Max pooling with indices and max-unpooling (ONNX MaxPool Indices, MaxUnpool): reference, kernel, TensorRT plugin, ONNX node."""
