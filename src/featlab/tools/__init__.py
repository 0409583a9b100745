"""Command-line tools: bench, report, upscale (tiled inference), export_onnx."""
