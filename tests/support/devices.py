"""Stand-in devices: the CPU backend dressed as a GPU, to test the engine's device path here.

This machine has no GPU. The engine treats any backend not named "cpu" as a device: it
batches its chunk for it (``max_batch_images``), keeps the host images for a retry, halves a
batch that does not fit and hands over to the CPU when it keeps failing. Subclasses inject
the faults the CuPy backend raises (DeviceFailure, DeviceOutOfMemory) at the backend
boundary. Each worker process builds its own device (``BackendChoice.make``), as GPU
workers build their own CUDA context; counters that a test reads across workers live in
shared memory.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Callable

from gpupipe.backends import BackendChoice
from gpupipe.backends.numpy import NumpyBackend
from gpupipe.engine.options import RunOptions
from gpupipe.engine.processes import ProcessEngine


class StandInDevice(NumpyBackend):
    """NumPy's ops, a device's shape: batches of up to 8 images."""

    name, max_batch_images = "stand-in-device", 8

    def describe(self) -> str:
        return f"{self.name} (NumPy)"


def choice(make: Callable[[], NumpyBackend]) -> BackendChoice:
    example = make()
    return BackendChoice(example.name, example.describe(), make)


def run_on(make: Callable[[], NumpyBackend], spec, inputs: list[Path] | Path, out: Path, workers: int = 2, **options):
    """A local run whose workers each build their backend with ``make``."""
    inputs = inputs if isinstance(inputs, list) else [inputs]
    return ProcessEngine(spec, choice(make), RunOptions(workers=workers, **options)).run(inputs, out)


class SharedCount:
    """A counter (or running maximum) every worker process adds to: they are forked after it is made."""

    def __init__(self) -> None:
        self._value = multiprocessing.get_context("fork").Value("i", 0)

    def add(self, amount: int = 1) -> int:
        with self._value.get_lock():
            self._value.value += amount
            return self._value.value

    def raise_to(self, amount: int) -> None:
        """The value becomes ``amount`` if that is more (a running maximum over all workers)."""
        with self._value.get_lock():
            self._value.value = max(self._value.value, amount)

    @property
    def value(self) -> int:
        return self._value.value
