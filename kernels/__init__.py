"""CUDA C sources for the CuPy backend, shipped as package resources (see README.md here)."""
