"""Denoiser and text-encoder backends behind one protocol (`base.py`): onnxruntime, tensorrt, torch."""
