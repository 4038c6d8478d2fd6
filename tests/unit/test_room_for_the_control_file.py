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

"""After a failure on a full disk, the last control-file rewrite makes room.

A control file is rewritten through a temporary file, which needs a free
block.  When the disk filled before any checkpoint landed, the last one
punches out the end of the held data and records the rest; the functional
test (``tests/functional/http/test_disk_full.py``) does it on a real full
tmpfs, these tests the edges.
"""

import errno
import os
import types

import pytest

from oslo_transfer import _utils
from oslo_transfer.engine import partfile as partfile_mod
from oslo_transfer.engine import segments as seg_mod
from oslo_transfer import exceptions

MiB = 1024 * 1024


class _Journal:
    """Fails ``fail`` saves with ``err``, then records what it saved."""

    def __init__(self, ranges, fail=1, err=errno.ENOSPC):
        self.ranges = _utils.RangeSet(ranges)
        self.prefix_len = 0
        self.prefix_digest = None
        self.fail = fail
        self.err = err
        self.saved = []

    def save(self):
        if self.fail:
            self.fail -= 1
            try:
                raise OSError(self.err, os.strerror(self.err))
            except OSError as exc:
                raise exceptions.DestinationError('cannot save') from exc
        self.saved.append(self.ranges.to_list())


@pytest.fixture
def part(tmp_path):
    path = tmp_path / 'image.raw.part'
    data = os.urandom(8 * MiB)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDWR)
    yield types.SimpleNamespace(fd=fd, path=str(path), data=data)
    os.close(fd)


def _save(journal, part, make_room=True):
    seg_mod.save_journal(journal, part, make_room=make_room)


def _allocated(part) -> int:
    return os.fstat(part.fd).st_blocks * 512


def test_the_end_of_the_held_data_is_given_back(part, caplog):
    j = _Journal([(0, 8 * MiB)])
    before = _allocated(part)
    _save(j, part, make_room=True)
    assert j.saved == [[[0, 7 * MiB]]]
    assert before - _allocated(part) >= MiB
    with open(part.path, 'rb') as f:
        kept = f.read(7 * MiB)
        assert kept == part.data[:7 * MiB]
        assert f.read() == bytes(MiB)
    assert 'dropped [7340032, 8388608) of the 8388608 bytes held' in \
        caplog.text


def test_each_try_gives_back_twice_as_much(part):
    j = _Journal([(0, 2 * MiB), (4 * MiB, 8 * MiB)], fail=2)
    _save(j, part, make_room=True)
    # 1 MiB, then 2, from the end of the last range.
    assert j.saved == [[[0, 2 * MiB], [4 * MiB, 5 * MiB]]]


def test_a_range_shorter_than_the_room_goes_whole(part):
    j = _Journal([(0, 4 * MiB), (6 * MiB, 6 * MiB + 8192)])
    _save(j, part, make_room=True)
    assert j.saved == [[[0, 4 * MiB]]]


def test_a_prefix_digest_beyond_what_is_kept_is_dropped(part):
    j = _Journal([(0, 8 * MiB)])
    j.prefix_len, j.prefix_digest = 8 * MiB, 'ab' * 32
    _save(j, part, make_room=True)
    assert (j.prefix_len, j.prefix_digest) == (0, None)

    j = _Journal([(0, 4 * MiB), (6 * MiB, 8 * MiB)])
    j.prefix_len, j.prefix_digest = 4 * MiB, 'cd' * 32
    _save(j, part, make_room=True)
    assert (j.prefix_len, j.prefix_digest) == (4 * MiB, 'cd' * 32)


@pytest.mark.parametrize('make_room,err', [
    (False, errno.ENOSPC),      # not after a failure: never punch
    (True, errno.EIO),          # not a full disk
])
def test_nothing_is_given_back_otherwise(part, make_room, err):
    j = _Journal([(0, 8 * MiB)], err=err)
    before = _allocated(part)
    with pytest.raises(exceptions.DestinationError):
        _save(j, part, make_room=make_room)
    assert j.ranges.to_list() == [[0, 8 * MiB]]
    assert _allocated(part) == before


def test_no_punch_support_records_nothing_new(part, monkeypatch):
    monkeypatch.setattr(partfile_mod, 'punch_hole', lambda fd, o, n: False)
    j = _Journal([(0, 8 * MiB)])
    with pytest.raises(exceptions.DestinationError):
        _save(j, part, make_room=True)
    assert j.ranges.to_list() == [[0, 8 * MiB]]


def test_it_gives_up_after_a_few_tries(part):
    j = _Journal([(0, 8 * MiB)], fail=100)
    with pytest.raises(exceptions.DestinationError):
        _save(j, part, make_room=True)
    # 1 + 2 + 4 MiB given back over three tries, and one more save failed.
    assert j.ranges.to_list() == [[0, MiB]]
    assert j.saved == []
