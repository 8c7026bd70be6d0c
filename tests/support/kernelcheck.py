"""Run kernels/*.cu on the CPU under AddressSanitizer (docs/design.md §5).

How it works:

* ``build(name)`` compiles ``kernels/<name>.cu`` *unchanged* with g++ through
  ``kernels/cpu_shim.h`` (``__global__`` → nothing, thread-local
  ``blockIdx``/``threadIdx``, intrinsics as host maths) plus one generated
  ``extern "C" shim_<kernel>(gx, gy, bx, <kernel params>)`` per kernel that loops
  over the grid. Flags: ``-fsanitize=address -ffp-contract=off``. Libraries are
  cached in a temp directory by the hash of everything that goes into them.
* Batches are packed exactly as the CuPy backend will pack them: one uint8
  buffer with the HWC images back to back and one ``ImageDesc`` (kernels/gpupipe.cuh)
  per image (``DESC``, a NumPy structured dtype with the same layout, checked
  against the compiled struct).
* ASan needs its runtime loaded first, so the comparisons run in a child
  ``python -m pytest`` with ``LD_PRELOAD`` of g++'s ``libasan.so``. Each
  tests/backends/cuda/test_kernels_<x>.py holds its checks in a class collected only in the
  child (``INNER``) and one ``test_under_asan`` collected only in the parent,
  which runs the child and fails on a failing check or on any ASan report.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np

from tests.support import REPO_ROOT

ROOT = REPO_ROOT
KERNELS = ROOT / "kernels"
SHIM = KERNELS / "cpu_shim.h"

ENV_FLAG = "GPUPIPE_KERNELCHECK"
INNER = os.environ.get(ENV_FLAG) == "asan"
CXX = os.environ.get("CXX", "g++")
CC = os.environ.get("CC", "gcc")
CXXFLAGS = ["-std=c++17", "-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer",
            "-ffp-contract=off", "-shared", "-fPIC", "-pthread", "-Wall", "-Wno-unused-function"]

# ImageDesc (kernels/gpupipe.cuh), field for field: the CUDA backend's own host-side layout.
from gpupipe.backends.cuda.plans import MEMCPY, DESC, Buf  # noqa: E402

DESC_FIELDS = [(name, DESC.fields[name][0]) for name in DESC.names]

_KERNEL_RE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)


# --------------------------------------------------------------------------- building

def kernels_in(source: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """[(kernel name, [(param type, param name), ...])] of every extern "C" __global__ function."""
    found = []
    for name, params in _KERNEL_RE.findall(source):
        plist = []
        for p in (q.strip() for q in params.split(",")):
            if p:
                m = re.match(r"(.*?)(\w+)$", p, re.S)
                plist.append((m.group(1).strip(), m.group(2)))
        found.append((name, plist))
    return found


def _ctype(ptype: str):
    if "*" in ptype:
        return ctypes.c_void_p
    words = ptype.replace("const", "").split()
    if words == ["float"]:
        return ctypes.c_float
    if words == ["double"]:
        return ctypes.c_double
    if words.count("long") == 2:
        return ctypes.c_ulonglong if "unsigned" in words else ctypes.c_longlong
    if words in (["int"], ["signed"]):
        return ctypes.c_int
    if "unsigned" in words:
        return ctypes.c_uint
    raise TypeError(f"kernelcheck cannot pass a kernel parameter of type {ptype!r}")


def _wrapper(cu: Path, source: str) -> str:
    lines = ['#include "cpu_shim.h"', f'#include "{cu}"', "#include <stddef.h>", ""]
    offsets = ", ".join(f"(long long)offsetof(ImageDesc, {f[0]})" for f in DESC_FIELDS)
    lines.append(f"extern \"C\" long long shim_desc_layout(int i) {{ const long long v[] = "
                 f"{{(long long)sizeof(ImageDesc), {offsets}}}; return v[i]; }}")
    # Threads that meet at __syncthreads need to run at once: one OS thread each (cpu_shim.h).
    launch = "shim_launch_cooperative" if "__syncthreads" in source else "shim_launch"
    for name, params in kernels_in(source):
        decl = "".join(f", {t} {n}" for t, n in params)
        args = ", ".join(n for _, n in params)
        lines.append(f'extern "C" void shim_{name}(unsigned gx, unsigned gy, unsigned bx{decl}) '
                     f"{{ {launch}(gx, gy, 1, bx, 1, 1, [&] {{ {name}({args}); }}); }}")
    return "\n".join(lines) + "\n"


def cache_dir() -> Path:
    d = Path(os.environ.get("GPUPIPE_KERNELCHECK_CACHE") or
             Path(tempfile.gettempdir()) / f"gpupipe-kernelcheck-{os.getuid()}")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _cached_build(out: Path, command, what: str) -> Path:
    """``out`` (a path named by the ``_digest`` of everything that goes into it) built by the
    compiler line ``command(tmp, target)`` unless it is there already; built beside it and renamed
    in, so a concurrent build of the same hash writes the same bytes."""
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        target = Path(tmp) / out.name
        proc = subprocess.run(command(Path(tmp), target), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the compiler failed on {what}:\n{proc.stderr}")
        os.replace(target, out)
    return out


def _digest(parts: list[str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def compile_shared(cu: Path, source: str | None = None) -> Path:
    """The ASan-instrumented shared library of one .cu file (cached by content hash)."""
    cu = Path(cu).resolve()
    source = cu.read_text() if source is None else source
    wrapper = _wrapper(cu, source)
    headers = [h.read_text() for h in sorted(KERNELS.glob("*.cuh"))]   # any may be included
    parts = [wrapper, source, SHIM.read_text(), *headers, " ".join([CXX, *CXXFLAGS])]

    def command(tmp: Path, target: Path) -> list[str]:
        src = tmp / "shim_wrapper.cpp"
        src.write_text(wrapper)
        return [CXX, *CXXFLAGS, "-I", str(KERNELS), "-I", str(cu.parent), str(src), "-o", str(target)]

    return _cached_build(cache_dir() / f"{cu.stem}-{_digest(parts)}.so", command, cu.name)


def compile_extension(c_file: Path, defines: tuple[str, ...] = ()) -> Path:
    """An ASan-instrumented build of a one-file CPython extension (cached by content hash), loaded
    in the ASan child with ``load_extension``: the C the CPU backend runs gets the kernels' check.
    ``defines``: extra ``-D`` macros."""
    c_file = Path(c_file).resolve()
    include = sysconfig.get_paths()["include"]
    flags = ["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer", "-ffp-contract=off", "-shared",
             "-fPIC", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers", "-Werror",
             *(f"-D{name}" for name in defines)]
    parts = [c_file.read_text(), " ".join([CC, *flags, include])]
    # a folder per hash: the module's file name must stay what Python imports it by
    out = cache_dir() / c_file.stem / _digest(parts) / (c_file.stem + sysconfig.get_config_var("EXT_SUFFIX"))
    return _cached_build(out, lambda tmp, target: [CC, *flags, "-I", include, str(c_file), "-o", str(target)],
                         c_file.name)


def load_extension(name: str, path: str | Path):
    """Import the extension module ``name`` from ``path`` (an ASan build), without sys.modules."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class KernelLib:
    """A compiled kernel file: ``lib.launch("gp_x", grid=(gx, gy), block=bx, *args)``."""

    def __init__(self, cu: Path, source: str | None = None) -> None:
        source = Path(cu).read_text() if source is None else source
        self.path = compile_shared(cu, source)
        self.dll = ctypes.CDLL(str(self.path))
        self.kernels = dict(kernels_in(source))
        self.dll.shim_desc_layout.restype = ctypes.c_longlong
        self.dll.shim_desc_layout.argtypes = [ctypes.c_int]
        layout = [self.dll.shim_desc_layout(i) for i in range(len(DESC_FIELDS) + 1)]
        expected = [DESC.itemsize] + [DESC.fields[name][1] for name in DESC.names]
        if layout != expected:
            raise AssertionError(f"ImageDesc layout differs: C {layout}, NumPy {expected}")
        for name, params in self.kernels.items():
            fn = getattr(self.dll, f"shim_{name}")
            fn.restype = None
            fn.argtypes = [ctypes.c_uint] * 3 + [_ctype(t) for t, _ in params]

    def launch(self, name: str, *args, grid=(3, 2), block: int = 32) -> None:
        keep = []        # the arrays must outlive the call

        def conv(a):
            if isinstance(a, np.ndarray):
                if not a.flags.c_contiguous:
                    raise ValueError("kernel arguments must be C-contiguous")
                keep.append(a)
                return a.ctypes.data
            return a

        getattr(self.dll, f"shim_{name}")(grid[0], grid[1], block, *(conv(a) for a in args))


_LIBS: dict[str, KernelLib] = {}


def build(name: str) -> KernelLib:
    """kernels/<name>.cu, compiled (cached) and loaded once per process."""
    if name not in _LIBS:
        _LIBS[name] = KernelLib(KERNELS / f"{name}.cu")
    return _LIBS[name]


# --------------------------------------------------------------------------- batches

def pack(images, dtype=np.uint8) -> tuple[np.ndarray, np.ndarray]:
    """(one packed buffer, element offsets) of HWC images back to back."""
    sizes = [img.size for img in images]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    buf = np.empty(int(offsets[-1]), dtype)     # exact size: ASan sees any overrun
    for img, off in zip(images, offsets):
        buf[off:off + img.size] = img.ravel()
    return buf, offsets[:-1]


def descriptors(images, out_shapes) -> tuple[np.ndarray, int]:
    """ImageDesc array for images -> out_shapes (H, W, C); returns (descs, output buffer size)."""
    descs = np.zeros(len(images), DESC)
    in_off = out_off = 0
    for d, img, shape in zip(descs, images, out_shapes):
        h, w, c = img.shape
        oh, ow, oc = shape
        d["in_offset"], d["out_offset"] = in_off, out_off
        d["width"], d["height"], d["channels"] = w, h, c
        d["out_width"], d["out_height"], d["out_channels"] = ow, oh, oc
        in_off += h * w * c
        out_off += oh * ow * oc
    return descs, out_off


def unpack(buf: np.ndarray, descs: np.ndarray) -> list[np.ndarray]:
    out = []
    for d in descs:
        shape = (int(d["out_height"]), int(d["out_width"]), int(d["out_channels"]))
        off = int(d["out_offset"])
        out.append(buf[off:off + int(np.prod(shape))].reshape(shape).copy())
    return out


def run_batch(lib: KernelLib, kernel: str, images, out_shapes, *params, setup=None,
              grid=(3, 2), block=32, isolate=False) -> list[np.ndarray]:
    """Pack images, launch kernel(src, dst, descs, n, *params), unpack the results.

    ``setup(descs)`` may fill per-image descriptor fields (x, y, param...).
    ``isolate``: also run every image alone, in buffers of exactly its size, so that ASan
    sees an access outside *one* image (in a packed batch it may land in a neighbour);
    both runs must agree.
    """
    if isolate:
        alone = []
        for k, (img, shape) in enumerate(zip(images, out_shapes)):
            def one_setup(descs, k=k):
                if setup is not None:
                    full = np.zeros(len(images), DESC)
                    setup(full)
                    for name in ("x", "y", "param", "aux_offset"):
                        descs[0][name] = full[k][name]
            alone += run_batch(lib, kernel, [img], [shape], *params, setup=one_setup, grid=grid, block=block)
        batched = run_batch(lib, kernel, images, out_shapes, *params, setup=setup, grid=grid, block=block)
        for k, (a, b) in enumerate(zip(alone, batched)):
            if not np.array_equal(a, b):
                raise AssertionError(f"{kernel}: image {k} differs between its own launch and the batch")
        return batched
    src, _ = pack(images)
    descs, out_size = descriptors(images, out_shapes)
    if setup is not None:
        setup(descs)
    dst = np.full(out_size, 0xA5, np.uint8)        # garbage where a kernel forgets to write
    lib.launch(kernel, src, dst, descs, len(images), *params, grid=grid, block=block)
    return unpack(dst, descs)


def kernel_library(kernel: str) -> KernelLib:
    """The compiled kernels/*.cu that defines ``kernel``."""
    for cu in sorted(KERNELS.glob("*.cu")):
        if any(name == kernel for name, _ in kernels_in(cu.read_text())):
            return build(cu.stem)
    raise KeyError(f"no kernel {kernel} in kernels/*.cu")


def run_program(program, images, grid=(3, 2), block=32) -> list[np.ndarray]:
    """Execute a gpupipe.backends.cuda.plans.Program on the CPU, as the CuPy backend does on a GPU:
    the batch packed into an exactly-sized buffer, scratch buffers filled with garbage (so a
    value a kernel forgets to write shows) unless the program asks for zeros, host arrays
    passed as they are."""
    src, _ = pack(images, program.dtype)
    buffers = {"src": src}
    for name, (elements, dtype) in program.buffers.items():
        garbage = np.nan if np.dtype(dtype).kind == "f" else (-7 if np.dtype(dtype).kind == "i" else 0xA5)
        buffers[name] = np.full(elements, 0 if name in program.zeroed else garbage, dtype)
    for launch in program.launches:
        args = [buffers[a.name] if isinstance(a, Buf) else a for a in launch.args]
        if launch.kernel == MEMCPY:
            np.copyto(args[1], args[0])
            continue
        kernel_library(launch.kernel).launch(launch.kernel, *args, grid=grid, block=block)
    result = buffers[program.result]
    out, offset = [], 0
    for h, w, c in program.out_shapes:
        out.append(result[offset:offset + h * w * c].reshape(h, w, c).copy())
        offset += h * w * c
    assert offset == result.size, "the result buffer is exactly the outputs"
    return out


def random_image(rng: np.random.Generator, h: int, w: int, c: int, dtype=np.uint8) -> np.ndarray:
    """Random pixels of a depth; alpha mixes uniform values with many 0s and maxima."""
    top = np.iinfo(dtype).max
    img = rng.integers(0, top + 1, (h, w, c), dtype=dtype)
    if c in (2, 4):
        special = rng.random((h, w)) < 0.4
        img[..., -1][special] = rng.choice(np.array([0, top], dtype), int(special.sum()))
    return img


SHAPES = [(1, 1), (1, 7), (9, 1), (2, 3), (5, 4), (13, 17), (32, 24), (3, 40)]

# Launch shapes for kernels with __syncthreads: they run one OS thread per CUDA thread (cpu_shim.h),
# and every block ends at a barrier, so fewer idle blocks keep those launches to seconds.
COOPERATIVE_GRIDS = [((1, 1), 1), ((3, 2), 7), ((16, 3), 64)]


def mixed_batch(seed: int, shapes=SHAPES, channels=(1, 2, 3, 4), dtype=np.uint8) -> list[np.ndarray]:
    """Images of every shape in `shapes` crossed with channel counts, in a shuffled order."""
    rng = np.random.default_rng(seed)
    images = [random_image(rng, h, w, c, dtype) for (h, w) in shapes for c in channels]
    order = rng.permutation(len(images))
    return [images[i] for i in order]


# --------------------------------------------------------------------------- ASan child

def asan_runtime() -> str | None:
    try:
        path = subprocess.run([CXX, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
    return path if path and os.path.isabs(path) and os.path.exists(path) else None


def run_inner(test_file: str, timeout: float = 300) -> str:
    """Run test_file's checks in a child pytest under ASan; raise AssertionError on any failure."""
    if shutil.which(CXX) is None:
        raise AssertionError(f"{CXX} is needed to build the kernels for the CPU check")
    runtime = asan_runtime()
    if runtime is None:
        raise AssertionError(f"{CXX} has no libasan.so (install libasan / gcc's sanitizer runtime)")
    env = dict(os.environ)
    env.update({
        ENV_FLAG: "asan",
        "LD_PRELOAD": runtime,
        # Python itself leaks by design at exit; report errors only, and make them fatal.
        "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=99",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
           str(test_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    output = proc.stdout + proc.stderr
    if "AddressSanitizer" in output or proc.returncode != 0:
        raise AssertionError(f"kernel check under ASan failed (exit {proc.returncode}):\n{output[-12000:]}")
    if not re.search(r"\b\d+ passed\b", output) or re.search(r"\b\d+ (skipped|xfailed|errors?)\b", output):
        raise AssertionError(f"kernel check ran no clean set of tests:\n{output[-4000:]}")
    return output


def asan_test(test_file: str):
    """The parent-side test of a test_kernels_<x>.py module (collected only outside the child)."""
    def test_under_asan():
        run_inner(test_file)
    test_under_asan.__test__ = not INNER
    return test_under_asan


def require_asan_loaded() -> None:
    """In the child: fail loudly if the ASan runtime is not really in the process."""
    with open("/proc/self/maps") as f:
        if "libasan" not in f.read():
            raise AssertionError("ASan runtime not loaded (LD_PRELOAD missing)")
