"""The CUDA backend: kernels/*.cu through CuPy, on batches packed in device memory.

``plans`` (no CUDA needed) decides what to launch for each op; ``backend`` runs it.
"""
