"""The two hashes gpupipe uses, blake2b and sha256, without loading OpenSSL.

``import hashlib`` loads OpenSSL's libcrypto first (``_hashlib``), whatever hash is asked for:
12 million instructions and 3-4 ms of every start, before a run can fork its workers.
CPython builds both hashes in (hashlib's own blake2b is this one); the same algorithms give
the same digests, so a journal or spec hash made either way is the same.
"""

from __future__ import annotations

try:
    from _blake2 import blake2b
except ImportError:                      # an interpreter without CPython's own modules
    from hashlib import blake2b

try:
    from _sha2 import sha256             # CPython 3.12 and later
except ImportError:
    try:
        from _sha256 import sha256       # CPython 3.11
    except ImportError:
        from hashlib import sha256

__all__ = ["blake2b", "sha256"]
