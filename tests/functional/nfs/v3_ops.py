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

"""What the NFSv3 tests run inside the namespace (see :mod:`.nsagent`).

Each function takes the agent (``agent.ganesha`` is the server) and JSON
arguments, and returns something JSON can carry; the test asserts on it.
An exception travels back as ``{'error': {'class', 'message',
'retryable'}}``.
"""

import hashlib
import os
import subprocess
import tempfile
import threading

import oslo_transfer
from oslo_transfer._drivers.nfs import NFSDriver
from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import testing

MiB = 1024 * 1024


def _driver():
    drv = NFSDriver(testing.make_conf(drivers=[NFSDriver]))
    drv.check_available()
    return drv


def _ctx(timeout=10.0):
    return driver_mod.Context(io_timeout=timeout)


def data_for(seed: str, size: int) -> bytes:
    """Deterministic bytes, the same on both sides of the pipe."""
    out = bytearray()
    block = hashlib.sha512(seed.encode()).digest()
    i = 0
    while len(out) < size:
        out += hashlib.sha512(block + i.to_bytes(8, 'big')).digest()
        i += 1
    return bytes(out[:size])


def _md5(data) -> str:
    return hashlib.md5(data).hexdigest()


def stat(agent, url):
    drv = _driver()
    try:
        st = drv.stat(locations.Location(url), _ctx())
        return {'size': st.size, 'validator': st.validator}
    finally:
        drv.close()


def read(agent, url, offset=0, length=None):
    drv = _driver()
    try:
        h, n = hashlib.md5(), 0
        for chunk in drv.read(locations.Location(url), offset, length,
                              _ctx()):
            h.update(chunk)
            n += len(chunk)
        return {'md5': h.hexdigest(), 'size': n}
    finally:
        drv.close()


def write(agent, url, seed, size, offset=0, piece=100000):
    data = data_for(seed, size)[offset:]
    drv = _driver()
    try:
        chunks = (data[i:i + piece] for i in range(0, len(data), piece))
        w = drv.write(locations.Location(url), chunks, _ctx(),
                      offset=offset, size=size)
        w.commit()
        return {'bytes_written': w.bytes_written,
                'written_size': drv.written_size(locations.Location(url),
                                                 _ctx())}
    finally:
        drv.close()


def write_aborted(agent, url, seed, size):
    """The chunk iterator fails before the end (a checksum mismatch)."""
    data = data_for(seed, size)
    drv = _driver()

    def chunks():
        yield data[:size // 2]
        raise exceptions.ChecksumMismatch('held back the last chunk')

    try:
        try:
            drv.write(locations.Location(url), chunks(), _ctx(), size=size)
        except exceptions.ChecksumMismatch as exc:
            raised = type(exc).__name__
        else:
            raised = None
        return {'raised': raised,
                'written_size': drv.written_size(locations.Location(url),
                                                 _ctx())}
    finally:
        drv.close()


def independent_md5(agent, url, tool, size):
    """md5 of the first ``size`` bytes of ``url`` read by another client.

    ``tool`` is ``nfs-cat`` (libnfs' own tool) or ``qemu-img`` (qemu's
    NFS block driver, which pads the image to whole 512-byte sectors:
    the padding must be zeros).
    """
    if tool == 'nfs-cat':
        out = subprocess.run(['nfs-cat', url], check=True,
                             capture_output=True, timeout=120).stdout
    else:
        with tempfile.TemporaryDirectory() as d:
            dest = os.path.join(d, 'out.raw')
            subprocess.run(['qemu-img', 'convert', '-O', 'raw', url, dest],
                           check=True, capture_output=True, timeout=120)
            with open(dest, 'rb') as f:
                out = f.read()
        if out[size:].strip(b'\0'):
            raise AssertionError('qemu-img read non-zero bytes past the end')
    return _md5(out[:size])


def read_resume_after_kill(agent, url, kill_at):
    """Read, SIGKILL ganesha after ``kill_at`` bytes, restart, read on."""
    drv = _driver()
    loc = locations.Location(url)
    try:
        it = iter(drv.read(loc, 0, None, _ctx(timeout=5)))
        got = bytearray()
        while len(got) < kill_at:
            got += next(it)
        agent.ganesha.kill()
        error = None
        try:
            for chunk in it:
                got += chunk
        except exceptions.TransferError as exc:
            error = {'class': type(exc).__name__, 'retryable': exc.retryable,
                     'message': str(exc)}
        held = len(got)
        agent.ganesha.start()
        for chunk in drv.read(loc, held, None, _ctx()):
            got += chunk
        return {'error': error, 'held': held, 'md5': _md5(bytes(got)),
                'size': len(got)}
    finally:
        drv.close()


def copy(agent, url, dest, checksum=None, same_network=True):
    res = oslo_transfer.copy(url, dest, checksum=checksum,
                             hints=oslo_transfer.Hints(
                                 same_network=same_network))
    return {'driver': res.driver, 'size': res.size, 'digest': res.digest,
            'bytes_resumed': res.bytes_resumed,
            'bytes_transferred': res.bytes_transferred}


def copy_killed_midway(agent, url, dest, size, checksum=None):
    """Copy at 8 MiB/s, SIGKILL ganesha after a third: the error."""
    killed = threading.Event()

    def progress(done, total):
        if done >= size // 3 and not killed.is_set():
            killed.set()
            agent.ganesha.kill()

    conf = testing.make_conf({('oslo_transfer', 'retries'): 0,
                              ('oslo_transfer', 'io_timeout'): 5.0})
    try:
        with oslo_transfer.Transfer(conf) as t:
            t.copy(url, dest, checksum=checksum, progress=progress,
                   rate=8 * MiB,
                   hints=oslo_transfer.Hints(same_network=True))
    except exceptions.TransferError as exc:
        error = {'class': type(exc).__name__, 'message': str(exc)}
    else:
        error = None
    finally:
        if not agent.ganesha.running:
            agent.ganesha.start()
    return {'killed': killed.is_set(), 'error': error,
            'part_exists': os.path.exists(dest + '.part')}


def write_killed_midway(agent, url, seed, size, kill_at):
    """Write; SIGKILL ganesha at ``kill_at``; restart; resume the write."""
    data = data_for(seed, size)
    drv = _driver()
    loc = locations.Location(url)
    step = 256 * 1024

    def chunks():
        for i in range(0, len(data), step):
            if i == kill_at:
                agent.ganesha.kill()
            yield data[i:i + step]

    try:
        try:
            drv.write(loc, chunks(), _ctx(timeout=5), size=size)
        except exceptions.TransferError as exc:
            error = {'class': type(exc).__name__,
                     'retryable': exc.retryable}
        else:
            error = None
        agent.ganesha.start()
        held = drv.written_size(loc, _ctx())
        w = drv.write(loc, iter([data[held:]]), _ctx(), offset=held,
                      size=size)
        w.commit()
        return {'error': error, 'held': held}
    finally:
        if not agent.ganesha.running:
            agent.ganesha.start()
        drv.close()
