"""The straightforward torchvision GPU script for W1, gpupipe's GPU peer (issue 15):

    python benchmarks/torchvision_w1.py IN OUT [--batch 64] [--device cuda]

Every JPEG under IN, in batches: files read by a thread pool, ``decode_jpeg(device="cuda")``
on the batch (nvJPEG), each image resized to fit 256×256 with ``resize(antialias=True)``
(bilinear, as torchvision's default), ``encode_jpeg(quality=85)`` on the GPU, the files
written by the thread pool. One process, as a user would write it; timed whole by the
caller. Prints one JSON line: images made and seconds. Needs torch and torchvision (the
device image has them); ``--device cpu`` runs the same script on the CPU, to check it.
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


def fit(height: int, width: int) -> list[int]:
    scale = BOX / max(height, width)
    return [max(1, round(height * scale)), max(1, round(width * scale))] if scale < 1 else [height, width]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg
    from torchvision.transforms.v2.functional import resize

    started = time.perf_counter()
    paths = sorted(p for p in a.inputs.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    a.output.mkdir(parents=True, exist_ok=True)
    pool = ThreadPoolExecutor(os.cpu_count() or 4)

    def read(path: Path):
        return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)

    def write(path: Path, data) -> None:
        (a.output / path.name).write_bytes(data.cpu().numpy().tobytes())

    made, writes = 0, []
    batches = [paths[i:i + a.batch] for i in range(0, len(paths), a.batch)]
    reading = pool.map(lambda batch: [read(p) for p in batch], batches)     # reads run ahead
    for batch, datas in zip(batches, reading):
        images = decode_jpeg(datas, mode=ImageReadMode.RGB, device=a.device)
        small = [resize(image, fit(*image.shape[1:]), antialias=True) for image in images]
        files = encode_jpeg(small, quality=QUALITY)
        writes += [pool.submit(write, path, data) for path, data in zip(batch, files)]
        made += len(files)
    for done in writes:
        done.result()
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
    print(json.dumps({"images": made, "seconds": time.perf_counter() - started, "torch": torch.__version__,
                      "device": a.device}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
