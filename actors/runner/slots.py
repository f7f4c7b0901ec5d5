"""A node's stage-worker slots: how many stage workers may live on one node, all runners together.

Each runner owns its stage workers, but they share the node's cores: ten runners keeping four
workers each are forty processes, and when a database crash costs every runner its leases,
each busy worker is killed (a stage never runs in two places) and forty process starts follow
at once — on two cores, enough to stall the attempts that should finish meanwhile.  So a
worker first takes one of the node's ``size`` slots: an exclusive ``flock`` on one of ``size``
files in a directory of the node's temp dir named after the Ray node.  The lock is held by
the runner's open file for as long as the worker lives and is given back when the worker is
closed — or when the runner's process ends, however it ends: the kernel releases it, so a
crashed runner never leaks a slot.  With no slot free, the attempt runs as a Ray task.

Pure (no Ray): the node's id is given.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import tempfile
import time
from pathlib import Path

__all__ = ["NodeSlots", "Slot"]


class Slot:
    """One slot held: released by ``release`` (once) or with the process."""

    def __init__(self, fd: int, index: int) -> None:
        self._fd = fd
        self.index = index

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the file drops its lock
            self._fd = -1


class NodeSlots:
    """``size`` slots shared by every process of this user on one node."""

    #: After finding every slot taken, look again no sooner than this (an attempt that finds
    #: none runs as a Ray task; trying on each attempt would cost ``size`` opens each time).
    RETRY_SECONDS = 0.25

    def __init__(self, size: int, node_id: str, root: Path | None = None) -> None:
        self.size = size
        self.directory = (root or Path(tempfile.gettempdir())) / f"wfdag-stage-slots-{node_id}"
        self._full_until = 0.0

    def acquire(self) -> Slot | None:
        """A free slot, or None when all ``size`` are held (by this process or another)."""
        if self.size <= 0 or time.monotonic() < self._full_until:
            return None
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        order = list(range(self.size))
        random.shuffle(order)  # runners do not all contend for slot 0 first
        for index in order:
            fd = os.open(self.directory / f"slot-{index}", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            return Slot(fd, index)
        self._full_until = time.monotonic() + self.RETRY_SECONDS
        return None
