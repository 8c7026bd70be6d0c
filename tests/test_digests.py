"""gpupipe.digests gives the digests hashlib gives (OpenSSL's, where hashlib has it): spec hashes,
journal checksums and output claims made before and after it are the same."""

import hashlib

import pytest

from gpupipe import digests


@pytest.mark.parametrize("data", [b"", b"gpupipe", bytes(range(256)) * 4099])
def test_the_same_digests_as_hashlib(data):
    assert digests.sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    for size in (4, 12, 16, 64):
        assert digests.blake2b(data, digest_size=size).digest() == hashlib.blake2b(data, digest_size=size).digest()
    streamed = digests.blake2b(digest_size=16)
    for start in range(0, len(data), 1000):
        streamed.update(data[start:start + 1000])
    assert streamed.hexdigest() == hashlib.blake2b(data, digest_size=16).hexdigest()
