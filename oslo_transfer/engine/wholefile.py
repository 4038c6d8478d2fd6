#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.

"""The ``.part`` file as a whole-file driver sees it (``copy_to_path``).

A whole-file driver (BitTorrent, the local file copy) writes into
``DEST.part`` itself and reports the ranges it wrote with
``target.record()``.  :class:`Target` keeps those ranges and has them
reach the control file from a thread of its own, each time half the
checkpoint interval was recorded (and at least once a second), after a
sync of the ``.part``: the sync overlaps the driver's writing.
``record()`` waits while the bytes recorded and not yet in the control
file reach ``checkpoint_bytes``, so that what a crash costs stays within
the interval however slow the disk is -- the bound the streamed path
keeps too (:mod:`oslo_transfer.engine.segments`).
"""

import logging
import threading
import time

from oslo_transfer import _utils
from oslo_transfer.engine import segments as seg_mod
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

#: the longest a recorded range waits for the control file, in seconds
MAX_DELAY = 1.0


class Target:
    """:class:`oslo_transfer.driver.PartTarget` of one download.

    :param job: the :class:`~oslo_transfer.engine.download.Download`.
    :param size: the object's size, or None.

    Use as a context manager around ``copy_to_path``: the checkpoint
    thread runs inside, and on the way out what was recorded since the
    last checkpoint is saved, also after a failure (on a full disk,
    making room for the control file first).
    """

    def __init__(self, job, size, origin=None):
        self.path = job.part.path
        self._origin = origin
        self.size = size
        self.checkpoint_bytes = job.checkpoint_bytes
        self._job = job
        self._cond = threading.Condition()
        self._save_lock = threading.Lock()
        self._recorded = job.journal.ranges.copy()
        # Recorded since the last snapshot, and in the save being made.
        self._unsaved = 0
        self._saving = 0
        self._saved_at = time.monotonic()
        self._error = None
        self._stop = False
        self._thread = None

    # -- what the driver calls -------------------------------------------

    def held(self) -> list:
        """Ranges held from earlier runs."""
        return list(self._job.journal.ranges)

    def record(self, offset: int, length: int) -> None:
        """``[offset, offset+length)`` is written and verified.

        Waits while the bytes recorded and not yet saved reach
        ``checkpoint_bytes``.

        :raises DestinationError: the control file could not be written.
        """
        _utils.cooperate()
        with self._cond:
            self._recorded.add(offset, offset + length)
            self._unsaved += length
            self._cond.notify_all()
            while (self._unsaved + self._saving >= self.checkpoint_bytes and
                   self._error is None and not self._stop):
                self._cond.wait(0.05)
            if self._error is not None:
                raise self._error

    def progress(self, nbytes: int) -> None:
        job = self._job
        sched = job.ctx.scheduler
        if sched is not None:
            # the scheduler sees the bytes a driver copies by itself too
            sched.account(nbytes, job.ctx.priority, self._origin)
        job.count_wire(nbytes)
        job.count_done(nbytes)

    # -- checkpoints ----------------------------------------------------------

    def __enter__(self):
        self._thread = threading.Thread(target=self._checkpointer,
                                        name='oslo-transfer-checkpoint',
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()
        # What the driver recorded since the last save stays held, also
        # when it failed or was cancelled.
        try:
            self._checkpoint(make_room=exc_type is not None)
        except exceptions.TransferError as err:
            if exc_type is None:
                raise
            # Do not hide the driver's own error behind this one.
            LOG.warning('could not record progress of %s: %s', self.path,
                        err)

    def _due(self) -> bool:
        return (self._unsaved >= self.checkpoint_bytes // 2 or
                (self._unsaved > 0 and
                 time.monotonic() - self._saved_at >= MAX_DELAY))

    def _checkpointer(self):
        """Thread: save whenever a checkpoint is due, until stopped."""
        while True:
            with self._cond:
                while not self._stop and not self._due():
                    self._cond.wait(0.1)
                if self._stop:
                    return
            try:
                self._checkpoint()
            except BaseException as exc:  # noqa: a full disk, an EIO
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return

    def _checkpoint(self, make_room=False):
        """Sync ``.part``, then write the recorded ranges to the journal.

        Held means durable: whatever the driver did, the ranges reach the
        control file only after the ``.part`` was synced (the inode is
        shared).
        """
        job = self._job
        with self._save_lock:
            with self._cond:
                snap = self._recorded.copy()
                self._saving, self._unsaved = self._unsaved, 0
            try:
                if snap.total() == job.journal.ranges.total():
                    return
                job.part.sync()
                job.journal.ranges = snap
                seg_mod.save_journal(job.journal, job.part, make_room)
            finally:
                with self._cond:
                    self._saving = 0
                    self._saved_at = time.monotonic()
                    self._cond.notify_all()
