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

"""No leaks: one ``Transfer`` runs 1,000 copies, as a service does for months.

The copies mix real servers (nginx, vsftpd), local files and the memory
driver of :mod:`oslo_transfer.fixture`, streamed reads (``open()``), and
copies that fail on purpose: a 404, a checksum mismatch, a refused
connection, a missing FTP file, an injected mid-stream failure.  After
the first 50 the process's open file descriptors, threads (Python's and
the kernel's) and resident memory are noted; after the 1,000th they must
be back at that level: not one more descriptor or thread, and at most
:data:`RSS_SLACK` more memory (the allocator's arenas settle, nothing
grows with the number of copies: 950 copies leaking one 64 KiB chunk
each would be 60 MiB).
"""

import gc
import logging
import os
import threading

import pytest

from oslo_transfer import exceptions
from oslo_transfer import fixture
from tests.functional import conftest as fconf
from tests.functional import servers

KiB = 1024
MiB = 1024 * KiB
COPIES = 1000
WARM_UP = 50
#: resident memory the process may gain between copy 50 and copy 1,000
RSS_SLACK = 8 * MiB


def levels() -> dict:
    """Open fds, threads and resident bytes of this process, now."""
    gc.collect()
    with open('/proc/self/status') as f:
        rss = next(int(line.split()[1]) * KiB for line in f
                   if line.startswith('VmRSS:'))
    return {'fds': len(os.listdir('/proc/self/fd')),
            'threads': threading.active_count(),
            'native_threads': len(os.listdir('/proc/self/task')),
            'rss': rss}


@pytest.fixture
def quiet():
    """The failures log warnings; pytest would keep every record."""
    logger = logging.getLogger('oslo_transfer')
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def test_a_thousand_copies_leave_nothing_behind(web, ftp, files, tmp_path,
                                                quiet):
    small = files(web.docroot, 'leak-small.bin', 64 * KiB)
    medium = files(web.docroot, 'leak-medium.bin', MiB + 17)
    by_ftp = files(ftp.anon_root, 'leak-ftp.bin', 96 * KiB)
    local = files(tmp_path / 'src', 'leak-local.bin', 128 * KiB)
    closed = 'http://127.0.0.1:%d/nothing' % servers.free_port()
    fix = fixture.TransferFixture(drivers=['http', 'file', 'ftp'],
                                  retries=1, io_timeout=10.0)
    fix.setUp()
    try:
        fix.store.put('memory://glance/img', small.data)
        t = fix.transfer
        out = tmp_path / 'out'
        out.mkdir()
        dest = str(out / 'image')

        def ok(src, data, checksum=None):
            t.copy(src, dest, checksum=checksum)
            assert fconf.file_equals(dest, data.data)
            os.unlink(dest)

        def fails(exc_class, src, checksum=None):
            with pytest.raises(exc_class):
                t.copy(src, dest, checksum=checksum)
            # nothing recorded: nothing left (the lock file goes too)
            assert os.listdir(out) == []

        def stream(src, data):
            with t.open(src, checksum=data.checksum()) as r:
                assert b''.join(r) == data.data

        steps = [
            lambda: ok(web.url(small.name), small, small.checksum()),
            lambda: ok(local.path, local),
            lambda: ok(ftp.url(by_ftp.name), by_ftp, by_ftp.checksum()),
            lambda: ok('memory://glance/img', small),
            lambda: fails(exceptions.SourceNotFound, web.url('missing.bin')),
            lambda: fails(exceptions.ChecksumMismatch, web.url(small.name),
                          medium.checksum()),
            lambda: fails(exceptions.ConnectionFailed, closed),
            lambda: ok(web.url(medium.name), medium, medium.checksum()),
            lambda: fails(exceptions.SourceNotFound, ftp.url('missing.bin')),
            lambda: stream(web.url(medium.name), medium),
            lambda: (fix.store.fail_after('read', 16 * KiB),
                     ok('memory://glance/img', small)),
        ]
        seen = []
        for i in range(COPIES):
            steps[i % len(steps)]()
            if i + 1 == WARM_UP:
                seen.append(levels())
        seen.append(levels())
    finally:
        fix.cleanUp()
    first, last = seen
    assert last['fds'] <= first['fds'], seen
    assert last['threads'] <= first['threads'], seen
    assert last['native_threads'] <= first['native_threads'], seen
    assert last['rss'] - first['rss'] <= RSS_SLACK, seen
