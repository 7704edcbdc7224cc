"""Traffic analytics (Numba kernels, ONNX models, the video pipeline).

Runs in worker processes only; the control process never imports this package.
"""
