"""The NumPy backend: the reference implementation and the CPU path.

Each op maps to one array function in this package (resample, geometry,
color, intensity, filters, composite); a batch is a plain list, processed image by image.
Parallelism comes from the engine: one backend in each of its worker processes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ... import ops
from ...codecs import DeferredJpeg, decode_deferred_on_host
from ...errors import UndecodableImages
from .. import CPU_DESCRIPTION, cpu_description
from ..base import Backend
from . import color, composite, filters, geometry, intensity, resample


def _resize(img: np.ndarray, op: ops.Resize) -> np.ndarray:
    height, width = img.shape[:2]
    plan = op.plan(width, height)
    if (plan.width, plan.height) != (width, height):
        img = resample.resize(img, plan.width, plan.height, op.filter)
    if plan.crop:
        img = geometry.crop(img, *plan.crop)
    if plan.pad:
        canvas_w, canvas_h, left, top = plan.pad
        img = geometry.pad(img, canvas_w, canvas_h, left, top, op.background)
    return img


def _watermark(img: np.ndarray, op: ops.Watermark) -> np.ndarray:
    height, width = img.shape[:2]
    return composite.watermark(img, composite.mark_for(op, width, height), op.position, op.margin, op.opacity)


IMPLEMENTATIONS: dict[type[ops.Op], Callable[[np.ndarray, ops.Op], np.ndarray]] = {
    ops.Resize: _resize,
    ops.Thumbnail: _resize,
    ops.Crop: lambda img, op: geometry.crop(img, op.x, op.y, op.width, op.height),
    ops.CenterCrop: lambda img, op: geometry.center_crop(img, op.width, op.height),
    ops.Rotate: lambda img, op: geometry.rotate(img, op.degrees),
    ops.Flip: lambda img, op: geometry.flip(img, op.direction),
    ops.Grayscale: lambda img, op: color.grayscale(img),
    ops.Brightness: lambda img, op: color.brightness(img, op.value),
    ops.Contrast: lambda img, op: color.contrast(img, op.factor),
    ops.Window: lambda img, op: intensity.window(img, op.center, op.width, op.bits),
    ops.Normalize: lambda img, op: intensity.normalize(img, op.low, op.high),
    ops.Equalize: lambda img, op: intensity.equalize(img, op.clahe, op.clip_limit, op.tiles),
    ops.BoxBlur: lambda img, op: filters.box_blur(img, op.radius),
    ops.GaussianBlur: lambda img, op: filters.gaussian_blur(img, op.sigma),
    ops.Sharpen: lambda img, op: filters.sharpen(img, op.amount),
    ops.Unsharp: lambda img, op: filters.unsharp(img, op.sigma, op.amount, op.threshold),
    ops.Edges: lambda img, op: filters.edges(img, op.kind),
    ops.Emboss: lambda img, op: filters.emboss(img),
    ops.Convolve: lambda img, op: filters.convolve(img, np.asarray(op.kernel, np.float32), op.divisor, op.offset),
    ops.Watermark: _watermark,
}


def apply_op(img: np.ndarray, op: ops.Op) -> np.ndarray:
    """One op on one image (HWC, uint8 or uint16)."""
    return IMPLEMENTATIONS[type(op)](img, op)


class NumpyBackend(Backend):
    name = "cpu"
    description = CPU_DESCRIPTION
    # Small images go through the ops in batches, large ones one at a time. A batch's own cost in
    # the unit of work (the op walk, the hand-offs between its stages) was about a fifth of a 32×48
    # JPEG's whole time; batches of such images took the unit from 195 to 155 µs an input
    # (docs/benchmarks.md). An image of 64 K pixels (256×256) or more ends its batch: its codecs
    # take a millisecond or more, and one image at a time keeps memory and latency low.
    max_batch_images = 64
    max_batch_pixels = 2**16

    def __init__(self, decoder: str = "auto") -> None:
        # --decoder dali: DALI decodes the JPEGs of each batch on the CPU (upload), batches of up to
        # 16 so that its runs are worth their set-up; pillow: Pillow decodes every JPEG on the host.
        self.host_decoder = "pillow" if decoder == "pillow" else "turbo"
        self.jpeg = None
        if decoder == "dali":
            from ...codecs.dali import DaliDecoder
            self.jpeg = DaliDecoder("cpu")
            self.decodes_jpeg, self.max_batch_images, self.max_batch_pixels = True, 16, Backend.max_batch_pixels
        # OpenCV's thread pool is the engine's to set (engine.pool: one thread in each of several
        # worker processes), not the backend's.

    def upload(self, images: Sequence) -> list[np.ndarray]:
        """The images as they are; with DALI, the deferred JPEGs decoded by it in one batch (one it
        cannot decode is decoded by the host decoder, which fails it with its class if it must)."""
        images = list(images)
        if self.jpeg is None:             # the engine decoded them (process_batch): nothing deferred comes here
            return images
        deferred = [i for i, img in enumerate(images) if isinstance(img, DeferredJpeg) and img.host_pixels is None]
        if deferred:
            for i, pixels in zip(deferred, self.jpeg.decode([images[i] for i in deferred])):
                if pixels is not None:
                    images[i].host_pixels = pixels
        failed = decode_deferred_on_host(images, [i for i, img in enumerate(images) if isinstance(img, DeferredJpeg)])
        if failed:
            raise UndecodableImages(failed)
        return [img.host_pixels if isinstance(img, DeferredJpeg) else img for img in images]

    def apply(self, batch: list[np.ndarray], op: ops.Op) -> list[np.ndarray]:
        return [apply_op(img, op) for img in batch]

    def download(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        return batch

    def close(self) -> None:
        if self.jpeg is not None:
            self.jpeg.close()

    def describe(self) -> str:
        return cpu_description("dali" if self.jpeg is not None else self.host_decoder)
