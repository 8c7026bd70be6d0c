"""Run a spec's op trie over one batch of decoded images, on any backend.

This is the unit every engine shares (local threads now, Ray actors later):
images in, per image and per variant either a result array or the error that
stopped that variant. Sizes are checked on the host before any pixel work, so
an op that cannot apply to one image (a crop outside it) fails that image's
variant alone and the backend only ever sees valid work.
"""

from __future__ import annotations


import numpy as np

from ..backends.base import Backend
from ..codecs import DeferredJpeg, decode_deferred_on_host
from ..errors import DeviceFailure, DeviceOutOfMemory, InputError, ProcessingError, UndecodableImages
from ..spec import OpTrie, Spec

Result = np.ndarray | InputError


def variants_under(node: OpTrie) -> list[int]:
    found = list(node.variant_indices)
    for child in node.children:
        found.extend(variants_under(child))
    return found


def process_batch(backend: Backend, images: list[np.ndarray], spec: Spec,
                  trie: OpTrie | None = None) -> list[list[Result]]:
    """results[i][v]: variant v of image i, as an HWC uint8 array or the InputError that stopped it.

    Raises DeviceFailure when the device itself failed; every other error becomes
    the batch's per-image ProcessingError. ``images`` is consumed: the list is
    emptied so each input can be freed as soon as the ops after it have run (a
    12 MP photo is 36 MB per copy).
    """
    trie = trie or OpTrie.build(spec.variants)
    count = len(images)
    results: list[list[Result | None]] = [[None] * len(spec.variants) for _ in range(count)]
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
        _walk(backend, trie, uploaded.pop(), members, sizes, results)
    except InputError as exc:        # whole-batch failure: every unfinished variant of every image
        _fail_unfinished(results, exc)
    except DeviceFailure:            # the device's fault, not the images': the engine decides (retry, hand over)
        raise
    except Exception as exc:         # a backend bug must cost this batch, never the run
        _fail_unfinished(results, ProcessingError(f"{exc.__class__.__name__}: {exc}"))
    return results  # type: ignore[return-value]


def process_fitting(backend: Backend, images: list[np.ndarray], spec: Spec, trie: OpTrie | None,
                    too_big: Backend) -> list[list[Result]]:
    """process_batch on a device, halving any batch that does not fit in its memory; an image
    that does not fit alone is processed on ``too_big`` (the CPU backend) instead. ``images``
    is not consumed (the halves need it)."""
    try:
        return process_batch(backend, list(images), spec, trie)
    except DeviceOutOfMemory:
        if len(images) == 1:
            return process_batch(too_big, list(images), spec, trie)
        half = len(images) // 2
        return (process_fitting(backend, images[:half], spec, trie, too_big)
                + process_fitting(backend, images[half:], spec, trie, too_big))


def _walk(backend: Backend, root: OpTrie, batch, members: list[int], sizes: list[tuple[int, int]],
          results: list[list[Result | None]]) -> None:
    """Depth-first over the trie with an explicit stack: a batch is referenced only by
    its stack entry, so along a chain each intermediate is freed once the next op ran."""
    stack = [(root, batch, members, sizes)]
    del batch
    while stack:
        node, batch, members, sizes = stack.pop()
        if node.variant_indices:
            for member, array in zip(members, backend.download(batch)):
                for v in node.variant_indices:
                    results[member][v] = array
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
                children.append((child, backend.apply(sub, child.op), [members[p] for p in keep], child_sizes))
                del sub
        del batch
        stack.extend(reversed(children))
        del children


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
