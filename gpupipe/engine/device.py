"""A worker's backend, and the GPU's fallback: one copy for every engine.

Each worker (a local worker process, a Ray actor) builds its own backend when it first
needs it — a CUDA context does not survive a fork — and runs its batches through
``Device.process``:

- a batch too big for the device memory is halved, and an image too big alone is done on
  the CPU (``process_fitting``);
- a device failure (a lost GPU, not an image's fault) is retried on the same host images;
- after ``failures_allowed`` failures in a row, or a backend that does not start, the
  worker goes on with the CPU backend and says so once (``handover``); ``lost``, a flag
  shared by the run's workers, tells the others to do the same at their next batch.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np

from ..backends.base import Backend
from ..errors import DeviceFailure, SystemFailure
from ..spec import OpTrie, Spec
from .process import Result, process_batch, process_fitting

log = logging.getLogger("gpupipe")


class Device:
    def __init__(self, make: Callable[[], Backend], *, failures_allowed: int = 3, lost=None,
                 where: str = "the run") -> None:
        self._make = make
        self._backend: Backend | None = None
        self._cpu: Backend | None = None       # for images too big for the device alone, and the handover
        self.failures_allowed, self._failures = max(1, failures_allowed), 0
        self._lost = lost                      # shared: anything with a writable ``value`` (0: the device is fine)
        self._where = where                    # who goes on on the CPU, for the note
        self.handover: str | None = None       # this worker's note, when its device was replaced

    @property
    def backend(self) -> Backend:
        if self._backend is not None and self._backend.name != "cpu" and self._lost is not None and self._lost.value:
            self._replace(None)                # another worker found the device lost: no more batches on it
        if self._backend is None:
            try:
                self._backend = self._make()
            except SystemFailure as exc:       # e.g. no room on the device for one more context
                self._replace(f"the GPU backend did not start in this worker ({exc})")
        return self._backend

    @property
    def on_host(self) -> bool:
        """Whether the ops' results and temporaries take host memory (the budget's concern)."""
        return self.backend.name == "cpu"

    def process(self, images: list[np.ndarray], spec: Spec, trie: OpTrie,
                formats: Sequence[str | None], rescales: Sequence | None = None) -> list[list[Result]]:
        """process_batch on this worker's backend, with the fallback above. The CPU consumes
        ``images`` (each freed once the ops after it ran); a device keeps them until the batch is
        done (a retry needs them)."""
        while True:
            backend = self.backend
            if backend.name == "cpu":
                return process_batch(backend, images, spec, trie, formats, rescales)
            try:
                results = process_fitting(backend, images, spec, trie, self._cpu_backend(), formats, rescales)
                self._failures = 0
                return results
            except DeviceFailure as exc:
                self._failures += 1
                if self._failures < self.failures_allowed:
                    log.warning("device error on %s, retrying the batch: %s", backend.describe(), exc)
                else:
                    self._replace(f"{backend.describe()} failed {self._failures} times in a row ({exc})")

    def device_memory(self) -> dict[str, int] | None:
        try:
            return None if self._backend is None else self._backend.device_memory()
        except Exception:                      # a lost device may not answer: nothing to report
            return None

    def close(self) -> None:
        for backend in (self._backend, self._cpu):
            if backend is not None:
                try:
                    backend.close()
                except Exception:              # a dead device may fail to release: nothing to save
                    pass
        self._backend = self._cpu = None

    def _cpu_backend(self) -> Backend:
        if self._cpu is None:
            from ..backends.numpy import NumpyBackend
            self._cpu = NumpyBackend()
        return self._cpu

    def _replace(self, why: str | None) -> None:
        """Go on on the CPU: ``why`` is this worker's reason (None: another worker's, said already)."""
        old, self._backend = self._backend, self._cpu_backend()
        if old is not None:
            try:
                old.close()
            except Exception:
                pass
        if self._lost is not None:
            self._lost.value = 1
        if why is not None:
            self.handover = f"{why}; {self._where} continues on {self._backend.describe()}"
            log.warning("%s", self.handover)
