"""Run a spec's op trie over one batch of decoded images, on any backend.

Every worker runs its batches through this (by way of ``device.Device``): images
in, per image and per variant either a result array or the error that stopped
that variant. Sizes are checked on the host before any pixel work, so
an op that cannot apply to one image (a crop outside it) fails that image's
variant alone and the backend only ever sees valid work.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..backends.base import Backend
from ..codecs import DeferredJpeg, EncodedImage, decode_deferred_on_host
from ..errors import (DeviceFailure, DeviceOutOfMemory, InputError, ProcessingError, Rejected, UndecodableImages,
                      UserCodeFailed)
from ..ops import HostOp
from ..spec import OpTrie, Spec
from ..userops import run_host_op

Result = np.ndarray | EncodedImage | InputError


class Row(list):
    """One image's results, a Result per variant, and the tags its host ops gave it (merged)."""

    def __init__(self, values=()) -> None:
        super().__init__(values)
        self.tags: dict = {}

# variant index -> (JPEG quality, the images whose result it writes as JPEG): the variants a
# backend that encodes JPEG (``Backend.encodes_jpeg``) may encode where the pixels are.
DeviceJpegPlan = dict[int, tuple[int, frozenset[int]]]


def variants_under(node: OpTrie) -> list[int]:
    found = list(node.variant_indices)
    for child in node.children:
        found.extend(variants_under(child))
    return found


def process_batch(backend: Backend, images: list[np.ndarray], spec: Spec,
                  trie: OpTrie | None = None, formats: Sequence[str | None] | None = None,
                  rescales: Sequence | None = None) -> list[list[Result]]:
    """results[i][v]: variant v of image i, as an HWC array (uint8 or uint16), an EncodedImage (a JPEG the
    backend encoded where the pixels are) or the InputError that stopped it.

    ``formats`` are the images' decoded formats: with them, a backend that encodes JPEG
    (``encodes_jpeg``) encodes the results written as JPEG itself (a variant that keeps the
    input's format needs the format to know); without, every result comes back as pixels, and
    so do those of an image whose format is None (the engine leaves its JPEGs to the host).
    ``rescales``: per image, None or the (slope, intercept) of its measured values (a DICOM
    decoded for a spec that reads values): its windows are moved onto its pixels (Spec.in_units).
    Raises DeviceFailure when the device itself failed; every other error becomes
    the batch's per-image ProcessingError. ``images`` is consumed: the list is
    emptied so each input can be freed as soon as the ops after it have run (a
    12 MP photo is 36 MB per copy).
    """
    if rescales is not None and any(r is not None for r in rescales) or len({_depth(img) for img in images}) > 1:
        return _in_groups(backend, images, spec, trie, formats, rescales)
    trie = trie or OpTrie.build(spec.variants)
    device_jpeg = device_jpeg_plan(spec, formats) if backend.encodes_jpeg and formats is not None else {}
    count = len(images)
    results: list[list[Result | None]] = [Row([None] * len(spec.variants)) for _ in range(count)]
    try:
        members = list(range(count))
        if not backend.decodes_jpeg:
            _decode_deferred_on_host(images, members, results)
        uploaded = [_upload(backend, images, members, results)]
        if not members:                  # every image failed to decode, each with its own error
            return results  # type: ignore[return-value]
        sizes = [(img.shape[1], img.shape[0]) for img in images]
        images.clear()
        # Hand the batch over without keeping a reference here, so _walk can free it
        # as soon as the first op has run.
        _walk(backend, trie, uploaded.pop(), members, sizes, results, device_jpeg)
    except InputError as exc:        # whole-batch failure: every unfinished variant of every image
        _fail_unfinished(results, exc)
    except DeviceFailure:            # the device's fault, not the images': the engine decides (retry, hand over)
        raise
    except Exception as exc:         # a backend bug must cost this batch, never the run
        _fail_unfinished(results, ProcessingError(f"{exc.__class__.__name__}: {exc}"))
    return results  # type: ignore[return-value]


def _depth(image) -> np.dtype:
    """An input's depth: its array's dtype (a DeferredJpeg is 8-bit)."""
    return image.dtype if isinstance(image, np.ndarray) else np.dtype(np.uint8)


def _in_groups(backend: Backend, images: list, spec: Spec, trie: OpTrie | None,
               formats: Sequence[str | None] | None, rescales: Sequence | None) -> list[list[Result]]:
    """process_batch on the images of each depth and rescale apart, the results back in the
    images' order: a device batch holds one depth (kernels/gpupipe.cuh), and images of measured
    values run the spec moved onto their pixels (Spec.in_units)."""
    rescales = list(rescales) if rescales is not None else [None] * len(images)
    groups: dict = {}
    for position, (image, rescale) in enumerate(zip(images, rescales)):
        groups.setdefault((_depth(image).itemsize, rescale), []).append(position)
    results: list = [None] * len(images)
    for (_, rescale), positions in sorted(groups.items(), key=lambda kv: kv[1][0]):
        group_spec, group_trie = (spec, trie) if rescale is None else (spec.in_units(*rescale), None)
        rows = process_batch(backend, [images[i] for i in positions], group_spec, group_trie,
                             None if formats is None else [formats[i] for i in positions])
        for position, row in zip(positions, rows):
            results[position] = row
    images.clear()
    return results


def process_fitting(backend: Backend, images: list[np.ndarray], spec: Spec, trie: OpTrie | None,
                    too_big: Backend, formats: Sequence[str | None] | None = None,
                    rescales: Sequence | None = None) -> list[list[Result]]:
    """process_batch on a device, halving any batch that does not fit in its memory; an image
    that does not fit alone is processed on ``too_big`` (the CPU backend) instead. ``images``
    is not consumed (the halves need it)."""
    try:
        return process_batch(backend, list(images), spec, trie, formats, rescales)
    except DeviceOutOfMemory:
        if len(images) == 1:
            return process_batch(too_big, list(images), spec, trie, formats, rescales)
        half = len(images) // 2
        return (process_fitting(backend, images[:half], spec, trie, too_big, _part(formats, 0, half),
                                _part(rescales, 0, half))
                + process_fitting(backend, images[half:], spec, trie, too_big, _part(formats, half, None),
                                  _part(rescales, half, None)))


def _part(values: Sequence | None, start: int, stop: int | None) -> Sequence | None:
    return None if values is None else values[start:stop]


def device_jpeg_plan(spec: Spec, formats: Sequence[str | None]) -> DeviceJpegPlan:
    """The variants written as JPEG, with their quality and the images concerned (not those
    whose format is None: left to the host)."""
    plan: DeviceJpegPlan = {}
    for v, variant in enumerate(spec.variants):
        jpegs = frozenset(i for i, fmt in enumerate(formats) if fmt is not None and variant.output_format(fmt) == "jpeg")
        if jpegs:
            plan[v] = (variant.quality, jpegs)
    return plan


def _walk(backend: Backend, root: OpTrie, batch, members: list[int], sizes: list[tuple[int, int]],
          results: list[list[Result | None]], device_jpeg: DeviceJpegPlan) -> None:
    """Depth-first over the trie with an explicit stack: a batch is referenced only by
    its stack entry, so along a chain each intermediate is freed once the next op ran."""
    stack = [(root, batch, members, sizes)]
    del batch
    while stack:
        node, batch, members, sizes = stack.pop()
        if node.variant_indices:
            _collect(backend, batch, node.variant_indices, members, results, device_jpeg)
        children = []
        for child in node.children:
            keep, child_sizes = [], []
            for position, (member, size) in enumerate(zip(members, sizes)):
                try:
                    child_sizes.append(child.op.output_size(*size))
                    keep.append(position)
                except InputError as exc:
                    for v in variants_under(child):
                        results[member][v] = exc
            if keep:
                sub = batch if len(keep) == len(members) else backend.subset(batch, keep)
                if isinstance(child.op, HostOp):
                    children.append(_run_on_host(backend, child, sub, [members[p] for p in keep], results))
                else:
                    children.append((child, backend.apply(sub, child.op), [members[p] for p in keep], child_sizes))
                del sub
        del batch
        stack.extend(reversed([entry for entry in children if entry[2]]))
        del children


def _run_on_host(backend: Backend, node: OpTrie, batch, members: list[int], results: list[list[Result | None]]):
    """A host op (user code) over a batch: each image downloaded, run, and the results uploaded
    again (a child entry of ``_walk``). An image it rejects is rejected whole (every variant); one
    it fails on fails the variants under this node; its tags join the image's row."""
    kept, images, sizes = [], [], []
    for member, array in zip(members, backend.download(batch)):
        try:
            image, tags = run_host_op(node.op, array)
        except Rejected as verdict:
            results[member][:] = [verdict] * len(results[member])
            continue
        except UserCodeFailed as exc:
            for v in variants_under(node):
                results[member][v] = exc
            continue
        results[member].tags.update(tags)
        kept.append(member)
        images.append(image)
        sizes.append((image.shape[1], image.shape[0]))
    return node, backend.upload(images) if images else None, kept, sizes


def _collect(backend: Backend, batch, variants: list[int], members: list[int],
             results: list[list[Result | None]], device_jpeg: DeviceJpegPlan) -> None:
    """The results of the variants that end at this node: JPEG files the backend encodes where
    the pixels are (one call per quality, shared by variants that agree), pixels for the rest
    and for any image the backend left to the host."""
    by_quality: dict[int, list[int]] = {}
    for v in variants:
        if v in device_jpeg:
            by_quality.setdefault(device_jpeg[v][0], []).append(v)
    for quality, group in by_quality.items():
        positions = [p for p, m in enumerate(members) if any(m in device_jpeg[v][1] for v in group)]
        if not positions:
            continue
        for p, encoded in zip(positions, backend.encode_jpeg(batch, positions, quality)):
            if encoded is not None:
                for v in group:
                    if members[p] in device_jpeg[v][1]:
                        results[members[p]][v] = encoded
    on_host = [p for p, m in enumerate(members) if any(results[m][v] is None for v in variants)]
    if not on_host:
        return
    sub = batch if len(on_host) == len(members) else backend.subset(batch, on_host)
    for p, array in zip(on_host, backend.download(sub)):
        for v in variants:
            if results[members[p]][v] is None:
                results[members[p]][v] = array


def _decode_deferred_on_host(images: list, members: list[int], results: list[list[Result | None]]) -> None:
    """Deferred JPEGs (codecs.DeferredJpeg) become host pixels for a backend without a JPEG
    decoder (the CPU backend after a GPU handed over); one that fails fails alone."""
    failed = decode_deferred_on_host(images, range(len(images)))
    for position, image in enumerate(images):
        if isinstance(image, DeferredJpeg) and position not in failed:
            images[position] = image.host_pixels
    _drop_failed(failed, images, members, results)


def _upload(backend: Backend, images: list, members: list[int], results: list[list[Result | None]]):
    """backend.upload; images it could not decode (UndecodableImages) fail alone, the rest go up."""
    while images:
        try:
            return backend.upload(images)
        except UndecodableImages as exc:
            _drop_failed(exc.errors, images, members, results)
    return None


def _drop_failed(failed: dict[int, InputError], images: list, members: list[int],
                 results: list[list[Result | None]]) -> None:
    for position in sorted(failed, reverse=True):
        row = results[members[position]]
        row[:] = [failed[position]] * len(row)
        del images[position], members[position]


def _fail_unfinished(results: list[list[Result | None]], exc: InputError) -> None:
    for row in results:
        for v, value in enumerate(row):
            if value is None:
                row[v] = exc
