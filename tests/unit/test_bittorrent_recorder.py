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

"""What the torrent download records after libtorrent reported a write error.

A piece can pass its hash check in memory and still not reach the file when
the write fails (a full disk): after such an error, each piece is checked
in the file before the control file calls it held.  The functional test
(``tests/functional/bittorrent/test_disk_full.py``) sees it on a full
tmpfs; this one pins the rule.
"""

import hashlib
import os
import types

from oslo_transfer._drivers.bittorrent import record as record_mod

PIECE = 64 * 1024


class _Meta:
    def __init__(self, data):
        self.data = data
        self.pieces = b''.join(
            hashlib.sha1(data[i:i + PIECE]).digest()
            for i in range(0, len(data), PIECE))
        self.total_size = len(data)
        self.piece_length = PIECE

    def piece_range(self, i):
        start = i * PIECE
        return start, min(PIECE, self.total_size - start)

    def piece_hash(self, i):
        return self.pieces[i * 20:i * 20 + 20]


class _Target:
    path = 'image.raw.part'

    def __init__(self):
        self.recorded = []

    def record(self, offset, length):
        self.recorded.append((offset, length))


def _recorder(tmp_path, storage_failed):
    data = os.urandom(4 * PIECE)
    on_disk = bytearray(data)
    on_disk[2 * PIECE + 100] ^= 0xff        # piece 2 never fully landed
    path = tmp_path / 'image.raw.part'
    path.write_bytes(bytes(on_disk[:int(3.5 * PIECE)]))   # piece 3 short
    fd = os.open(path, os.O_RDWR)
    job = types.SimpleNamespace(meta=_Meta(data), target=_Target(),
                                key='ab' * 20,
                                ctx=types.SimpleNamespace(io_timeout=60))
    rec = record_mod.Recorder(job, fd)
    rec.storage_failed = storage_failed
    rec.flushing = [0, 1, 2, 3]
    rec.result = True
    return rec, job, fd


def test_after_a_write_error_only_pieces_in_the_file_are_recorded(
        tmp_path, caplog):
    rec, job, fd = _recorder(tmp_path, storage_failed=True)
    try:
        rec.collect(now=1.0)
    finally:
        os.close(fd)
    assert job.target.recorded == [(0, PIECE), (PIECE, PIECE)]
    assert rec.idle
    assert '2 of 4 verified pieces did not reach image.raw.part' in \
        caplog.text


def test_without_a_write_error_the_flush_is_trusted(tmp_path):
    # (No read-back in the normal case: libtorrent's flush is the proof.)
    rec, job, fd = _recorder(tmp_path, storage_failed=False)
    try:
        rec.collect(now=1.0)
    finally:
        os.close(fd)
    assert len(job.target.recorded) == 4


def test_a_flush_starts_at_a_quarter_of_the_checkpoint_interval(tmp_path):
    """Pieces do not wait a whole second when they hold a quarter of it.

    At loopback speeds a second of pieces was up to 67 MiB that a kill
    cost (the soak, ``benchmarks/soak/run.py``).
    """
    flushes = []
    job = types.SimpleNamespace(
        meta=_Meta(os.urandom(8 * PIECE)),
        target=types.SimpleNamespace(checkpoint_bytes=8 * PIECE),
        handle=types.SimpleNamespace(
            save_resume_data=lambda flags: flushes.append(flags)),
        lt=types.SimpleNamespace(save_resume_flags_t=types.SimpleNamespace(
            flush_disk_cache=1)))
    rec = record_mod.Recorder(job, fd=-1)
    rec.last = 10.0
    rec.add(0)
    rec.maybe_flush(now=10.1)
    assert flushes == [] and rec.pending == [0]
    rec.add(1)
    rec.maybe_flush(now=10.2)
    assert flushes == [1] and rec.flushing == [0, 1] and rec.pending == []


class _Handle:
    def __init__(self):
        self.limits = []

    def set_download_limit(self, rate):
        self.limits.append(rate)


def _backlog(high=4 * PIECE):
    job = types.SimpleNamespace(handle=_Handle(), key='ab' * 20)
    return record_mod.Backlog(job, high), job.handle


def test_the_backlog_slows_libtorrent_down_until_pieces_are_recorded():
    """Verified pieces not yet recorded do not pile up.

    libtorrent downloads on its own threads: without back-pressure a slow
    flush or checkpoint let them reach 38.8 MiB, all lost to one kill in
    the soak (``benchmarks/soak/run.py``), where the bound was 24.1 MiB.
    """
    backlog, handle = _backlog()
    for i in range(3):
        backlog.verified(i, PIECE)
    assert handle.limits == []
    backlog.verified(3, PIECE)
    assert handle.limits == [record_mod.TRICKLE] and backlog.throttled
    backlog.verified(3, PIECE)          # the same piece again: counted once
    assert backlog.bytes == 4 * PIECE
    backlog.settled(PIECE)
    assert handle.limits == [record_mod.TRICKLE]
    backlog.settled(PIECE)
    assert handle.limits == [record_mod.TRICKLE, 0]
    assert not backlog.throttled and backlog.throttles == 1


def test_pieces_held_from_an_earlier_run_are_not_counted():
    """Pieces held from earlier runs never fill the backlog.

    libtorrent may report them as finished again: nothing would settle
    them, and the throttle would stay on for the whole resumed run.
    """
    backlog, handle = _backlog()
    backlog.held(range(8))
    for i in range(8):
        backlog.verified(i, PIECE)
    assert backlog.bytes == 0 and handle.limits == []


def test_the_recorder_settles_recorded_and_dropped_pieces(tmp_path):
    rec, job, fd = _recorder(tmp_path, storage_failed=True)
    backlog, handle = _backlog()
    rec.backlog = backlog
    for i in range(4):
        backlog.verified(i, PIECE)
    assert backlog.throttled
    try:
        rec.collect(now=1.0)
    finally:
        os.close(fd)
    # Pieces 2 and 3 are dropped (not in the file), yet no longer waiting.
    assert backlog.bytes == 0 and not backlog.throttled
