"""The straightforward NVIDIA DALI script for W1, gpupipe's second GPU peer (issue 17):

    python benchmarks/dali_w1.py IN OUT [--batch 64] [--device gpu|cpu]

Every JPEG under IN, in batches, the way DALI is meant to be used: its own file reader feeding
``fn.decoders.image`` on device "mixed" (nvJPEG) and ``fn.resize`` to fit 256×256 with
antialiasing on the GPU, pipelined (DALI prepares the next batches while one is taken); each
batch's images encoded as JPEG quality 85 with nvJPEG through nvImageCodec (which DALI installs;
DALI itself has no encoder), the files written by a thread pool. One process, as a user would write it; timed whole by the caller. Prints one JSON line:
images made and seconds. ``--device cpu`` runs the same pipeline on DALI's CPU operators and
encodes with libjpeg-turbo (simplejpeg), to check the script on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BOX, QUALITY = 256, 85


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    a = ap.parse_args()
    import numpy as np
    import nvidia.dali
    from nvidia.dali import fn, pipeline_def, types

    on_gpu = a.device == "gpu"
    started = time.perf_counter()
    paths = sorted(p for p in a.inputs.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    a.output.mkdir(parents=True, exist_ok=True)
    pool = ThreadPoolExecutor(os.cpu_count() or 4)

    @pipeline_def(batch_size=a.batch, num_threads=min(8, os.cpu_count() or 4), device_id=0 if on_gpu else None)
    def thumbnails():
        data, _ = fn.readers.file(files=[str(p) for p in paths], random_shuffle=False, pad_last_batch=True,
                                  name="files")
        images = fn.decoders.image(data, device="mixed" if on_gpu else "cpu", output_type=types.RGB)
        return fn.resize(images, resize_longer=BOX, antialias=True, subpixel_scale=False)

    pipe = thumbnails()
    pipe.build()
    if on_gpu:
        from nvidia import nvimgcodec
        encoder = nvimgcodec.Encoder()
        params = nvimgcodec.EncodeParams(quality=QUALITY, chroma_subsampling=nvimgcodec.ChromaSubsampling.CSS_420)

        def encode(batch) -> list[bytes]:
            return [bytes(f) for f in encoder.encode([batch.at(k) for k in range(len(batch))], "jpeg", params)]
    else:
        import simplejpeg

        def encode(batch) -> list[bytes]:
            return [simplejpeg.encode_jpeg(np.array(batch.at(k)), quality=QUALITY, colorsubsampling="420")
                    for k in range(len(batch))]

    def write(path: Path, data: bytes) -> None:
        (a.output / path.with_suffix(".jpg").name).write_bytes(data)

    made, writes = 0, []
    for start in range(0, len(paths), a.batch):      # the reader goes in order; the last batch is padded
        batch = paths[start:start + a.batch]
        small, = pipe.run()
        files = encode(small)[:len(batch)]
        writes += [pool.submit(write, path, data) for path, data in zip(batch, files)]
        made += len(files)
    for done in writes:
        done.result()
    print(json.dumps({"images": made, "seconds": time.perf_counter() - started, "dali": nvidia.dali.__version__,
                      "device": a.device}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
