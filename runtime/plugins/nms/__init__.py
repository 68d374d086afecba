"""Non-maximum suppression (ONNX NonMaxSuppression; fixed-size EfficientNms): reference, kernel, TensorRT plugin, ONNX node."""
