"""The CPU kernel harness itself: it must catch what it exists to catch.

A kernel with an off-by-one bound must be reported by AddressSanitizer, and the
packed-batch layout must agree with kernels/gpupipe.cuh.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np

from tests.support import kernelcheck as kc

test_under_asan = kc.asan_test(__file__)

KERNEL = r'''
#include "gpupipe.cuh"
extern "C" __global__ void gp_invert(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                     const ImageDesc* __restrict__ descs, int n_images) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const long long count = (long long)d.width * d.height * d.channels;
        for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p BOUND count;
             p += (long long)gridDim.x * blockDim.x)
            dst[d.out_offset + p] = 255 - src[d.in_offset + p];
    }
}
'''

CHILD = textwrap.dedent('''
    import sys
    from pathlib import Path
    import numpy as np
    sys.path.insert(0, {root!r})
    from tests.support import kernelcheck as kc
    cu = Path({cu!r})
    lib = kc.KernelLib(cu)
    images = kc.mixed_batch(0, shapes=[(3, 5), (1, 1), (4, 2)])
    got = kc.run_batch(lib, "gp_invert", images, [i.shape for i in images])
    assert all(np.array_equal(g, 255 - i) for g, i in zip(got, images))
    print("KERNEL OK")
''')


def _run_child(tmp_path, bound):
    cu = tmp_path / f"invert_{'le' if bound == '<=' else 'lt'}.cu"
    cu.write_text(KERNEL.replace("BOUND", bound))
    env = dict(os.environ, GPUPIPE_KERNELCHECK="asan", LD_PRELOAD=kc.asan_runtime() or "",
               ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:exitcode=99")
    code = CHILD.format(root=str(kc.ROOT), cu=str(cu))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


class TestHarness:
    __test__ = kc.INNER

    def test_asan_loaded(self):
        kc.require_asan_loaded()

    def test_desc_layout_matches_header(self):
        lib = kc.build("pointwise")     # KernelLib checks every ImageDesc offset against the compiled struct
        assert lib.dll.shim_desc_layout(0) == kc.DESC.itemsize == 72

    def test_pack_unpack_roundtrip(self):
        images = kc.mixed_batch(3)
        buf, offsets = kc.pack(images)
        descs, size = kc.descriptors(images, [i.shape for i in images])
        assert size == buf.size == sum(i.size for i in images)
        assert list(descs["in_offset"]) == list(offsets)
        descs["out_offset"] = descs["in_offset"]
        assert all(np.array_equal(a, b) for a, b in zip(kc.unpack(buf, descs), images))

    def test_kernel_parser(self):
        found = dict(kc.kernels_in(KERNEL))
        assert [n for _, n in found["gp_invert"]] == ["src", "dst", "descs", "n_images"]


def test_off_by_one_is_reported_by_asan(tmp_path):
    """`p <= count` overruns the last image's output: ASan must stop the child with a heap-buffer-overflow."""
    good = _run_child(tmp_path, "<")
    assert good.returncode == 0 and "KERNEL OK" in good.stdout, good.stdout + good.stderr
    bad = _run_child(tmp_path, "<=")
    assert bad.returncode != 0
    assert "heap-buffer-overflow" in bad.stderr, bad.stderr[-4000:]


test_off_by_one_is_reported_by_asan.__test__ = not kc.INNER   # the parent runs it; the child need not


BARRIER_KERNEL = r'''
#include "gpupipe.cuh"
// Each 256-byte chunk of an image, reversed through shared memory.
extern "C" __global__ void gp_reverse_chunks(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                             const ImageDesc* __restrict__ descs, int n_images) {
    __shared__ unsigned char stage[256];
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const long long count = (long long)d.width * d.height * d.channels;
        for (long long base = (long long)blockIdx.x * 256; base < count; base += (long long)gridDim.x * 256) {
            const int length = count - base < 256 ? (int)(count - base) : 256;
            for (int k = threadIdx.x; k < length; k += blockDim.x) stage[k] = src[d.in_offset + base + k];
            if (WHO) __syncthreads();
            for (int k = threadIdx.x; k < length; k += blockDim.x) dst[d.out_offset + base + k] = stage[length - 1 - k];
            __syncthreads();
        }
    }
}
'''

BARRIER_CHILD = textwrap.dedent('''
    import sys
    from pathlib import Path
    import numpy as np
    sys.path.insert(0, {root!r})
    from tests.support import kernelcheck as kc
    lib = kc.KernelLib(Path({cu!r}))
    images = kc.mixed_batch(1, shapes=[(30, 20), (1, 1), (7, 9)])
    got = kc.run_batch(lib, "gp_reverse_chunks", images, [i.shape for i in images], grid=(2, 2), block=16)
    for g, i in zip(got, images):
        flat = i.ravel()
        want = np.concatenate([flat[s:s + 256][::-1] for s in range(0, flat.size, 256)])
        assert np.array_equal(g.ravel(), want)
    print("KERNEL OK")
''')


def test_a_barrier_some_threads_skip_is_reported(tmp_path):
    """Files with __syncthreads run one OS thread per CUDA thread: a barrier every thread reaches
    works (the shared-memory result is right), one that thread 0 skips aborts with a message
    instead of passing by luck or hanging."""
    env = dict(os.environ, GPUPIPE_KERNELCHECK="asan", LD_PRELOAD=kc.asan_runtime() or "",
               ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:exitcode=99")
    outcomes = {}
    for name, who in (("uniform", "true"), ("divergent", "threadIdx.x != 0")):
        cu = tmp_path / f"reverse_{name}.cu"
        cu.write_text(BARRIER_KERNEL.replace("WHO", who))
        code = BARRIER_CHILD.format(root=str(kc.ROOT), cu=str(cu))
        outcomes[name] = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                        timeout=120)
    good, bad = outcomes["uniform"], outcomes["divergent"]
    assert good.returncode == 0 and "KERNEL OK" in good.stdout, good.stdout + good.stderr
    assert bad.returncode != 0 and "divergent barrier" in bad.stderr, bad.stderr[-4000:]


test_a_barrier_some_threads_skip_is_reported.__test__ = not kc.INNER
