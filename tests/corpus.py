"""Where the shared real-photo corpus lives: ../shared/corpus/photos beside the checkout
(as in CI), or GPUPIPE_CORPUS. Tests fail loudly when it is missing rather than
silently testing nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_candidates = [os.environ.get("GPUPIPE_CORPUS"),
               Path(__file__).resolve().parents[2] / "shared" / "corpus" / "photos",
               "/work/shared/corpus/photos"]
CORPUS = next((Path(c) for c in _candidates if c and (Path(c) / "kodak").is_dir()), None)
assert CORPUS is not None, f"the photo corpus was not found; looked in {_candidates}"
KODAK = sorted(str(p) for p in (CORPUS / "kodak").glob("*.png"))
assert KODAK, f"no kodak/*.png under {CORPUS}"


def copies(photos, directory: Path, times: int) -> Path:
    """A new ``directory`` holding ``times`` copies of each photo ("<copy>-<name>"): a corpus
    big enough for batches and queues to fill."""
    directory.mkdir(parents=True)
    for copy in range(times):
        for photo in photos:
            shutil.copy(photo, directory / f"{copy}-{Path(photo).name}")
    return directory
