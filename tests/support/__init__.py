"""What the tests share: real inputs (photos, bad files, hostile trees), stand-in devices, real
faulty filesystems, process helpers, and the CPU executor that runs the CUDA kernels under
AddressSanitizer. Not tests themselves."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
