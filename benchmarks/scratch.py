"""Output folders for timed runs, with nothing deleted while the timing lasts.

On ext4 without a journal (this VM's disk), creating a file makes the kernel step past every
free inode of the folder's group that was deleted in the last 60 s (360 s while its inode table
block is unwritten; ``recently_deleted`` in fs/ext4/ialloc.c), a buffer lookup each. A run timed
just after thousands of deletions pays for them in kernel CPU for every file it creates, more
with every repeat as the deletions pile up: W1 over 2 000 photos just after 2 000 outputs were
deleted spent 0.75–1.24 s of system CPU against 0.47–0.71 s with no deletion in the minute
before, and up to 2.3 s in back-to-back repeats. So a folder to be reused is renamed into a
trash folder (a rename frees no inode), and the trash is emptied once the timing is over.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path


class Scratch:
    """Fresh output folders under ``root``; the old ones wait in ``root/.trash`` until ``empty``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.trash = self.root / ".trash"

    def fresh(self, folder: Path) -> Path:
        """``folder``, empty: whatever was there is moved into the trash, not deleted."""
        folder = Path(folder)
        if folder.exists():
            self.trash.mkdir(parents=True, exist_ok=True)
            folder.rename(self.trash / f"{folder.name}-{uuid.uuid4().hex[:12]}")
        folder.mkdir(parents=True)
        return folder

    def empty(self) -> None:
        """Delete the trash (once the timed runs are over: the next minute's creations pay for it)."""
        shutil.rmtree(self.trash, ignore_errors=True)
