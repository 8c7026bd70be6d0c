#!/usr/bin/env bash
# Everything issue 3 still needs a GPU for, in one call of the device tool (its time is scarce):
# the GPU tests, then benchmarks/gpu.py; logs and results come back in $OUT.
#
#   here, just before:  bash benchmarks/gpu_session.sh --prepare
#       wheels the device image lacks (simplejpeg; Pillow 13, the resize contract) into .whl/ and
#       nvImageCodec into .nvimg/ and the benchmark photos into .photos/, all git-excluded (about
#       58 MB with the repo: < 64 MiB)
#   device:  run(command="bash benchmarks/gpu_session.sh", carry=[".whl", ".photos", ".nvimg"], timeout_s=600)
#            env: GPU_TESTS_TIMEOUT / GPU_BENCH_TIMEOUT (seconds), GPU_BENCH_ARGS (benchmarks/gpu.py
#            options, e.g. "--skip-kernels --workloads W3"), GPU_BENCH_SUFFIX (results file name),
#            GPU_PROFILE=1 (Nsight Compute over each kernel once: benchmarks/profile_kernels.py),
#            GPU_SCALING=1 (benchmarks/scaling.py: img/s and cores busy by worker count, both backends),
#            GPU_PEERS=1 (benchmarks/run.py: Pillow, OpenCV and, where .peerwhl travels, pyvips on
#            every core of this host, same corpora, then gpu.py --peers: every configuration's ratio
#            to the fastest peer; about 2 min)
#   a peers call carries .peerwhl (pyvips, libvips, cffi: 8 MB) instead of .nvimg, which would not
#   fit beside it:  run(command="GPU_TESTS_TIMEOUT=1 GPU_PEERS=1 GPU_BENCH_TIMEOUT=1 bash
#   benchmarks/gpu_session.sh", carry=[".whl", ".photos", ".peerwhl"]); then here, no GPU:
#   python benchmarks/gpu.py --merge-peers benchmarks/results/gpu-DATE.json <the peers file>
#   here, after:  copy the returned gpu-*.json into benchmarks/results/ and commit it
#   DALI (--decoder dali, gpu_dali, the DALI peer) cannot travel: its wheel is 420 MB, the carry
#   64 MiB. Its GPU test and benchmark rows skip, saying so, unless the device image has DALI.
#
# Issue 15 (engine v2) in one call (carry .whl, .photos, .nvimg; about 9 min): the GPU tests, the
# peers Pillow and OpenCV on every core, then W1 (with the torchvision peer) and W3 on the GPU:
#   GPU_TESTS_TIMEOUT=200 GPU_PEERS=1 GPU_PEERS_WORKLOADS=W1,W3 GPU_PEERS_TIMEOUT=150 GPU_BENCH_TIMEOUT=200
#   GPU_BENCH_SUFFIX=-engine-v2 GPU_BENCH_ARGS="--skip-kernels --workloads W1,W3 --configs gpu,gpu_nvjpeg_codecs"
#   bash benchmarks/gpu_session.sh
#
# Everything no longer fits one 10-minute call. A session's 30 minutes, most needed first (each
# call's prefix, then "bash benchmarks/gpu_session.sh"; carry as above unless said):
#   1. GPU_PROFILE=1 GPU_BENCH_ARGS=--skip-workloads        tests, ncu, kernels and twins   ~6 min
#   2. GPU_TESTS_TIMEOUT=1 GPU_BENCH_TIMEOUT=540 GPU_BENCH_SUFFIX=-w3
#      GPU_BENCH_ARGS="--skip-kernels --workloads W3"       nvJPEG ceiling, W3                 ~6 min
#   3. the peers call above (carry .peerwhl)                Pillow, pyvips, OpenCV W1-W3        ~4 min
#   4. GPU_TESTS_TIMEOUT=1 GPU_SCALING=1 GPU_BENCH_TIMEOUT=1  scaling, both backends          ~5 min
#   5. GPU_TESTS_TIMEOUT=1 GPU_BENCH_TIMEOUT=540 GPU_BENCH_SUFFIX=-w12
#      GPU_BENCH_ARGS="--skip-kernels --workloads W1,W2"     W1, W2                           ~7 min
# then --merge-peers the peers file into the -w3 and -w12 results.
set -uo pipefail
cd "$(dirname "$0")/.."
# The CPU backend's C resampler (gpupipe/backends/numpy/_resample.c) built for the interpreter $1
# into the folder $2, with pyproject.toml's flags.
build_resampler() {
    gcc -O3 -ffp-contract=off -fPIC -shared -I"$("$1" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
        gpupipe/backends/numpy/_resample.c \
        -o "$2/_resample$("$1" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
}
if [ "${1:-}" = "--prepare" ]; then
    for d in /.whl/ /.photos/; do grep -qxF "$d" .git/info/exclude || echo "$d" >> .git/info/exclude; done
    rm -rf .whl && python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl simplejpeg==1.9.0 pillow==13.0.0 tifffile==2026.3.3 || exit 1
    # nvImageCodec (GPU JPEG decode), unpacked and slimmed to Python 3.12 and the JPEG codecs: the
    # whole wheel would not fit in the 64 MiB that travel. libnvjpeg comes with the device's CUDA.
    grep -qxF /.nvimg/ .git/info/exclude || echo /.nvimg/ >> .git/info/exclude
    rm -rf .nvimg && mkdir -p .nvimg/site && python3 -m pip download -q --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 -d .nvimg \
        nvidia-nvimgcodec-cu13==0.9.0.20 || exit 1
    (cd .nvimg/site && unzip -q ../nvidia_nvimgcodec_cu13-*.whl && rm ../*.whl \
        && find nvidia/nvimgcodec -name 'nvimgcodec_impl.cpython-*' ! -name '*cpython-312-*' -delete \
        && rm -rf nvidia/nvimgcodec/tools nvidia/nvimgcodec/extensions/lib{opencv,tiff,nvtiff,nvjpeg2k}_ext*)
    # The peers' wheels the device image lacks: pyvips with its libvips build, and cffi under it.
    grep -qxF /.peerwhl/ .git/info/exclude || echo /.peerwhl/ >> .git/info/exclude
    rm -rf .peerwhl && python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .peerwhl pyvips-binary==8.18.7 cffi==2.1.1 pycparser==3.12 \
        && python3 -m pip wheel -q --no-deps -w .peerwhl pyvips==3.2.0 || exit 1    # pure Python: an sdist
    # The CPU backend's C resampler (gpupipe/backends/numpy/_resample.c), built for the device's
    # Python 3.12 here, where its headers are: it travels in .whl/ and is put in place there.
    py312=""
    for candidate in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
        "$candidate" -c "" 2>/dev/null && { py312="$candidate"; break; }
    done
    if [ -n "$py312" ]; then
        build_resampler "$py312" .whl || exit 1
    else
        echo "no python3.12 here: the resampler will be built on the device (needs gcc and Python's headers there)"
    fi
    photos="${GPUPIPE_BENCH_PHOTOS:?set GPUPIPE_BENCH_PHOTOS to the photos the benchmark corpora are made from}"
    rm -rf .photos && cp -r "$photos" .photos && du -sh .whl .photos .nvimg .peerwhl
    exit 0
fi
: "${OUT:?run this on the device machine (OUT is set there), or pass --prepare here}"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    $(ls .peerwhl/*.whl 2>/dev/null) || exit 1
# The checkout itself is gpupipe (kernels found in ./kernels); the wheels shadow the image's Pillow.
export PYTHONPATH="/tmp/site:$PWD/.nvimg/site:$PWD" GPUPIPE_BENCH_PHOTOS="$PWD/.photos"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"          # libnvjpeg for nvImageCodec
# The C resampler: the build --prepare made for Python 3.12, else one made here.
cp .whl/_resample.cpython-*.so gpupipe/backends/numpy/ 2>/dev/null
python3 -c "import gpupipe.backends.numpy._resample" 2>/dev/null || build_resampler python3 gpupipe/backends/numpy \
    || { echo "cannot build gpupipe/backends/numpy/_resample.c here" | tee "$OUT/error.txt"; exit 1; }
# The host's CPUs as well as the GPU: on 16 "cores" the CPU backend did 2.4x less per core than on the
# 2-core VM even where decode alone bounds it (W1, 12 MP): SMT siblings or a cgroup CPU quota would say why.
{ nvidia-smi; python3 -m pip list 2>/dev/null | grep -i -E "^(cupy|numpy|pillow|opencv)"; lscpu;
  cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us; } \
    > "$OUT/device.txt" 2>&1
python3 -m gpupipe doctor > "$OUT/doctor.txt" 2>&1
timeout "${GPU_TESTS_TIMEOUT:-240}" python3 -m pytest -q -rs -p no:cacheprovider tests/backends/cuda/test_gpu.py 2>&1 \
    | tee "$OUT/gpu-tests.log" | tail -40
# GPU_PROFILE=1: Nsight Compute over one launch of each kernel, where ncu is installed and may read
# the counters (it says so in ncu.txt when it may not).
NCU="$(command -v ncu || echo /usr/local/cuda/bin/ncu)"
if [ "${GPU_PROFILE:-0}" = 1 ] && [ -x "$NCU" ]; then
    timeout "${GPU_PROFILE_TIMEOUT:-150}" "$NCU" -k regex:^gp_ --section SpeedOfLight --section MemoryWorkloadAnalysis \
        --section LaunchStats --section Occupancy python3 benchmarks/profile_kernels.py > "$OUT/ncu.txt" 2>&1
    tail -5 "$OUT/ncu.txt"
fi
# GPU_SCALING=1: does the engine's per-file work stop small images short of the cores? About 4 min.
if [ "${GPU_SCALING:-0}" = 1 ]; then
    for backend in cpu gpu; do
        timeout "${GPU_SCALING_TIMEOUT:-240}" python3 benchmarks/scaling.py --backend "$backend" --repeats 2 \
            --workers "${GPU_SCALING_WORKERS:-4,8,$(nproc)}" --json "scaling-$backend-device-host-$(date +%F).json" 2>&1 | tee -a "$OUT/scaling.log" | tail -8
    done
fi
# GPU_PEERS=1: the peers on this host's cores, for the GPU's ratio to them (issue 3: "against the
# CPU backend and the peers on the same machine"). pyvips runs where .peerwhl travelled (then
# .nvimg cannot: both would not fit in the 64 MiB); DALI's wheel (424 MB) never would.
PEERS_ARG=()
if [ "${GPU_PEERS:-0}" = 1 ]; then
    peers="benchmarks/results/peers-device-host-$(date +%F)${GPU_BENCH_SUFFIX:-}.json"
    contenders=pillow,opencv
    python3 -c "import pyvips" 2>/dev/null && contenders=pillow,pyvips,opencv
    timeout "${GPU_PEERS_TIMEOUT:-300}" python3 benchmarks/run.py --contenders "$contenders" --repeats 2 --imagenet-count 2000 \
        --cooldown 0.2 --workloads "${GPU_PEERS_WORKLOADS:-W1,W2,W3}" --out "$peers" 2>&1 \
        | tee "$OUT/peers.log" | grep -E "^(==|pillow|pyvips|opencv)"
    [ -f "$peers" ] && PEERS_ARG=(--peers "$peers")
fi
# GPU_BENCH_ARGS narrows the benchmark to fit a call, e.g. "--skip-kernels --workloads W3".
# shellcheck disable=SC2086
timeout "${GPU_BENCH_TIMEOUT:-320}" python3 benchmarks/gpu.py --repeats 2 ${GPU_BENCH_ARGS:-} ${PEERS_ARG[@]+"${PEERS_ARG[@]}"} \
    --json "gpu-$(date +%F)${GPU_BENCH_SUFFIX:-}.json" 2>&1 | tee "$OUT/gpu-bench.log" | tail -40
cp benchmarks/results/gpu-*.json benchmarks/results/scaling-*-device-host-*.json \
    benchmarks/results/peers-device-host-*.json "$OUT/" 2>/dev/null
exit 0
