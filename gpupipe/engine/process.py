"""Run a spec's op trie over one batch of decoded images, on any backend.

This is the unit every engine shares (local threads now, Ray actors later):
images in, per image and per variant either a result array or the error that
stopped that variant. Sizes are checked on the host before any pixel work, so
an op that cannot apply to one image (a crop outside it) fails that image's
variant alone and the backend only ever sees valid work.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..backends.base import Backend
from ..errors import InputError, ProcessingError
from ..spec import OpTrie, Spec

Result = np.ndarray | InputError


def variants_under(node: OpTrie) -> list[int]:
    found = list(node.variant_indices)
    for child in node.children:
        found.extend(variants_under(child))
    return found


def process_batch(backend: Backend, images: Sequence[np.ndarray], spec: Spec,
                  trie: OpTrie | None = None) -> list[list[Result]]:
    """results[i][v]: variant v of image i, as an HWC uint8 array or the InputError that stopped it."""
    trie = trie or OpTrie.build(spec.variants)
    results: list[list[Result | None]] = [[None] * len(spec.variants) for _ in images]
    sizes = [(img.shape[1], img.shape[0]) for img in images]
    try:
        batch = backend.upload(list(images))
        _walk(backend, trie, batch, list(range(len(images))), sizes, results)
    except InputError as exc:        # whole-batch failure: every unfinished variant of every image
        _fail_unfinished(results, exc)
    except Exception as exc:         # a backend bug must cost this batch, never the run
        _fail_unfinished(results, ProcessingError(f"{exc.__class__.__name__}: {exc}"))
    return results  # type: ignore[return-value]


def _walk(backend: Backend, node: OpTrie, batch, members: list[int], sizes: list[tuple[int, int]],
          results: list[list[Result | None]]) -> None:
    if node.variant_indices:
        arrays = backend.download(batch)
        for member, array in zip(members, arrays):
            for v in node.variant_indices:
                results[member][v] = array
    for child in node.children:
        keep, child_sizes = [], []
        for position, (member, size) in enumerate(zip(members, sizes)):
            try:
                child_sizes.append(child.op.output_size(*size))
                keep.append(position)
            except InputError as exc:
                for v in variants_under(child):
                    results[member][v] = exc
        if not keep:
            continue
        sub = batch if len(keep) == len(members) else backend.subset(batch, keep)
        out = backend.apply(sub, child.op)
        _walk(backend, child, out, [members[p] for p in keep], child_sizes, results)


def _fail_unfinished(results: list[list[Result | None]], exc: InputError) -> None:
    for row in results:
        for v, value in enumerate(row):
            if value is None:
                row[v] = exc
