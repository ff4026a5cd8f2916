"""kdedge: turn a big teacher model into a small, fast ONNX student, in one command."""

__version__ = "0.1.0"
