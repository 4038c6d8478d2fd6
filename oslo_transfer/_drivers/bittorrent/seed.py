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

"""Seeding complete files from the process's session.

A file is seeded after the engine renamed it into place
(``Driver.after_commit``) -- by the download's own torrent, which waited in
the session meanwhile (:meth:`Seeds.hold`), so that its peers never see
this host leave -- or on demand (``Driver.seed``, for
``Transfer.seed`` and ``oslo-transfer seed``); both hand the caller a
:class:`Handle` (the contract's ``Seeding``).  Each seed
ends when its time is up, when it reached its upload ratio, when every peer
that the hints named is seen complete, or when the file changed (size or
mtime differ from when seeding started; libtorrent's hash check on first
upload of each piece in seed mode catches a change that keeps both).  A
reaper thread checks once a second.
"""

import logging
import os
import threading
import time

from oslo_transfer import driver
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

__all__ = ['Seeds', 'SEEDS', 'Handle']

#: seconds a seed stays after it saw every named peer complete
_LINGER = 3.0
#: seconds a completed download's torrent may wait in the session for the
#: engine's commit (its read-back checksum, fsync and rename)
_HOLD = 600.0
#: seconds it stays once its file is gone and nobody adopted it
_GONE = 5.0


class _Held:
    """A completed download's torrent, waiting to become the seed."""

    def __init__(self, meta, path, handle):
        self.meta = meta
        self.path = path
        self.handle = handle
        self.ident = _ident(os.stat(path))
        self.since = time.monotonic()
        self.gone_since = None


class _Entry:

    def __init__(self, meta, path, handle, until, ratio, peers,
                 seen_complete=()):
        self.meta = meta
        self.path = path
        self.handle = handle
        self.until = until
        self.ratio = ratio
        self.peers = peers
        st = os.stat(path)
        self.stamp = (st.st_size, st.st_mtime_ns)
        self.started = time.monotonic()
        #: endpoints of peers seen with the whole file (while seeding, or
        #: by the download before it)
        self.complete = set(seen_complete)
        self.all_complete_since = None
        #: why the seed ended, once it did
        self.reason = None
        #: the thread that takes the torrent out of the session
        self.removal = None

    def changed(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_size, st.st_mtime_ns) != self.stamp


class Seeds:
    """The files this process seeds, keyed by info-hash."""

    def __init__(self):
        self._lock = threading.Condition()
        self._entries = {}
        #: info-hash -> _Held
        self._held = {}
        self._sess = None
        self._reaper = None
        self._removals = []
        self._closed = False

    # -- starting -------------------------------------------------------------

    def start(self, sess, meta, path: str, seconds: float | None,
              ratio: float = 0.0, peers=(), trackers=(),
              verify: bool = False, seen_complete=()):
        """Seed ``path`` (the data of ``meta``).

        :param seconds: how long; None seeds until :meth:`stop`.
        :param ratio: stop once uploaded bytes reach ``ratio`` times the
            size (0: no ratio limit).
        :param peers: ``[(ip, port)]`` to connect to; seeding also stops
            early once each of them is seen complete.
        :param seen_complete: ``(ip, port)`` endpoints already seen with
            the whole file (by the download that made ``path``): a peer
            that stopped seeding while this host committed is not waited
            for.
        :param verify: hash-check every piece before seeding (a file that
            did not come from a verified download); otherwise libtorrent's
            seed mode checks each piece the first time it is uploaded.
        :raises DestinationError: ``path`` is missing or has the wrong size.
        """
        key = meta.info_hash
        until = None if seconds is None else time.monotonic() + seconds
        with self._lock:
            old = self._entries.get(key)
            if old is not None:
                if old.path == path and not old.changed():
                    if old.until is not None:
                        old.until = None if until is None else max(
                            old.until, until)
                    return old
                self._stop_locked(key, 'replaced by %s' % path)
        try:
            size = _size(path, meta)
        except OSError as exc:
            raise exceptions.DestinationError(
                'cannot seed %s: %s' % (path, exc)) from exc
        if size != meta.total_size:
            raise exceptions.DestinationError(
                'cannot seed %s: it has %d bytes, the torrent %d'
                % (path, size, meta.total_size))
        path = os.path.abspath(path)
        with self._lock:
            held = self._held.pop(key, None)
        handle = self._adopt(held, meta, path, peers) \
            if held and not verify else None
        if held is not None and handle is None:
            sess.remove(held.handle, key)
        if handle is None:
            handle = self._add(sess, meta, path, trackers, verify)
            if handle is None:
                return None
        for ip, port in peers:
            try:
                handle.connect_peer((ip, port))
            except RuntimeError as exc:
                LOG.debug('bittorrent: connect %s:%d: %s', ip, port, exc)
        entry = _Entry(meta, path, handle, until, ratio, list(peers),
                       seen_complete)
        with self._lock:
            self._entries[key] = entry
            self._sess = sess
            self._start_reaper()
        LOG.info('bittorrent: seeding %s (%s) %s%s', path, key,
                 'until stopped' if seconds is None else
                 'for %.0fs' % seconds,
                 ' (the download\'s torrent, its peers kept)' if held and
                 handle is held.handle else '')
        return entry

    def _adopt(self, held, meta, path, peers=()):
        """The held torrent of the file now at ``path``, or None.

        The engine renamed the ``.part`` file within its folder: the same
        file (device, inode, size and modification time) under another
        name.  libtorrent is told the new name (its file is gone, so it only
        notes the name) and goes on serving its peers, who never see this
        host leave.

        Not when fewer peers are connected than ``peers`` names: libtorrent
        stops trying an address after ``max_failcount`` (3) failed
        attempts, and the download may have spent them on a peer that was
        not up yet; a new torrent tries every named peer again.
        """
        try:
            st = os.stat(path)
            connected = len(held.handle.get_peer_info()) if peers else 0
        except (OSError, RuntimeError):
            return None
        if connected < len(peers):
            return None
        if not meta.single_file or _ident(st) != held.ident or \
                os.path.dirname(path) != os.path.dirname(held.path):
            return None
        try:
            held.handle.rename_file(0, os.path.basename(path))
        except RuntimeError as exc:
            LOG.debug('bittorrent: rename %s: %s', held.path, exc)
            return None
        return held.handle

    def _add(self, sess, meta, path, trackers, verify):
        """A new torrent seeding ``path``; None if one is in the session."""
        lt = sess.lt
        key = meta.info_hash
        if sess.find(key) is not None:
            LOG.info('bittorrent: %s is in the session already; not seeding '
                     '%s', key, path)
            return None
        p = lt.add_torrent_params()
        p.ti = lt.torrent_info(meta.torrent_bytes(trackers=list(trackers)))
        path = os.path.abspath(path)
        p.save_path = os.path.dirname(path)
        if meta.single_file:
            p.renamed_files = {0: os.path.basename(path)}
        elif os.path.basename(path) != meta.name:
            p.renamed_files = {
                i: os.path.join(os.path.basename(path), *f.path)
                for i, f in enumerate(meta.files)}
        # upload_mode: a seed never downloads, so peers can never "repair"
        # a file that differs from the torrent.
        p.flags = (lt.torrent_flags.apply_ip_filter |
                   lt.torrent_flags.upload_mode)
        if not verify:
            p.flags |= lt.torrent_flags.seed_mode
        checked = threading.Event()

        def on_event(event):
            if event.kind in ('torrent_checked_alert', 'torrent_error_alert',
                              'file_error_alert'):
                checked.set()

        sess.listen(key, on_event)
        try:
            handle = sess.add(p)
            if verify:
                checked.wait()
                st = handle.status()
                if not st.is_seeding:
                    sess.remove(handle, key)
                    raise exceptions.DestinationError(
                        '%s does not match torrent %s: %d of %d pieces '
                        'pass their hash check' % (
                            path, key, st.num_pieces, meta.num_pieces))
        finally:
            sess.unlisten(key, on_event)
        return handle

    def _start_reaper(self):
        # (the lock is held)
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(
                target=self._reap, name='oslo-transfer-seeds', daemon=True)
            self._reaper.start()

    # -- a download's torrent, until the engine committed its file -----------

    def hold(self, sess, meta, path: str, handle) -> bool:
        """Keep a completed download's torrent in the session for a while.

        Its peers keep a source while the engine verifies and renames the
        file, and the seed that :meth:`start` makes for the renamed file
        is this torrent (the peers stay connected): removing the torrent
        and adding a new one dropped every connection at the moment the
        last receivers needed them most.  A torrent that nobody adopts
        leaves the session once its file is gone for ``_GONE`` seconds
        (the engine discarded or renamed it; another file under its name
        is not it), or after ``_HOLD``.

        :param path: the ``.part`` file the torrent wrote.
        :returns: False if it cannot be held (the caller removes it).
        """
        # (Not switched to upload mode: it holds every piece, so it asks
        # for none.  While the hold did switch it, one benchmark receiver
        # of 28 died of a SIGSEGV in libtorrent right there; none of 32
        # since without the switch.  The cause is not proven.)
        try:
            held = _Held(meta, os.path.abspath(path), handle)
        except OSError as exc:
            LOG.debug('bittorrent: not holding %s: %s', path, exc)
            return False
        with self._lock:
            if self._closed or meta.info_hash in self._held:
                return False
            self._held[meta.info_hash] = held
            self._sess = sess
            self._start_reaper()
        return True

    def release(self, info_hash: str, reason: str = 'released') -> None:
        """Take a held torrent out of the session (and wait for that)."""
        with self._lock:
            held = self._held.pop(info_hash, None)
            sess = self._sess
        if held is not None and sess is not None:
            LOG.debug('bittorrent: %s leaves the session: %s', held.path,
                      reason)
            sess.remove(held.handle, info_hash)

    # -- questions ------------------------------------------------------------

    def local_copy(self, info_hash: str) -> str | None:
        """The path of an unchanged complete file seeded for ``info_hash``."""
        with self._lock:
            entry = self._entries.get(info_hash)
            if entry is None or not entry.meta.single_file or \
                    entry.changed():
                return None
            return entry.path

    def active(self) -> list:
        """``[(info_hash, path)]`` being seeded."""
        with self._lock:
            return [(k, e.path) for k, e in self._entries.items()]

    def status(self, info_hash: str) -> dict | None:
        with self._lock:
            entry = self._entries.get(info_hash)
        if entry is None:
            return None
        try:
            st = entry.handle.status()
        except RuntimeError:
            return None
        return {'path': entry.path, 'uploaded': st.total_payload_upload,
                'peers': st.num_peers, 'state': str(st.state),
                'error': st.errc.message() if st.errc.value() else None}

    # -- stopping -------------------------------------------------------------

    def wait_for(self, entry, timeout: float | None = None) -> bool:
        """Block until ``entry`` ended and left the session.

        :returns: False if ``timeout`` ran out first.
        """
        end = None if timeout is None else time.monotonic() + timeout
        key = entry.meta.info_hash
        with self._lock:
            while self._entries.get(key) is entry:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._lock.wait(left if left is not None else 1.0)
            removal = entry.removal
        if removal is not None:
            removal.join(None if end is None
                         else max(0.0, end - time.monotonic()))
            return not removal.is_alive()
        return True

    def stop_entry(self, entry, reason: str):
        """Stop ``entry`` if it is still the seed of its info-hash."""
        key = entry.meta.info_hash
        with self._lock:
            if self._entries.get(key) is entry:
                self._stop_locked(key, reason)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until nothing is seeded; False if ``timeout`` ran out."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._entries:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._lock.wait(left if left is not None else 1.0)
            removals = list(self._removals)
        # ... and until libtorrent let go of the files.
        for t in removals:
            t.join(None if end is None else max(0.0, end - time.monotonic()))
        return True

    def stop(self, info_hash: str | None = None, reason: str = 'stopped'):
        """Stop seeding ``info_hash`` (every torrent when None)."""
        with self._lock:
            keys = [info_hash] if info_hash else list(self._entries)
            for key in keys:
                self._stop_locked(key, reason)
            held = [info_hash] if info_hash else list(self._held)
        for key in held:
            self.release(key, reason)

    def _stop_locked(self, key, reason):
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        entry.reason = reason
        LOG.info('bittorrent: stopped seeding %s: %s', entry.path, reason)
        sess = self._sess
        if sess is not None and not self._closed:
            # Removal waits for libtorrent: not under the lock.
            t = threading.Thread(target=self._remove,
                                 args=(sess, entry.handle, key),
                                 name='oslo-transfer-unseed', daemon=True)
            entry.removal = t
            self._removals.append(t)
            t.start()
        self._lock.notify_all()

    def _remove(self, sess, handle, key):
        try:
            sess.remove(handle, key)
        finally:
            with self._lock:
                self._removals = [t for t in self._removals
                                  if t is not threading.current_thread()]

    def shutdown(self):
        """At exit: stop seeding and wait for libtorrent, in order."""
        for key in list(self._held):
            self.release(key, 'the process exits')
        with self._lock:
            for key in list(self._entries):
                self._stop_locked(key, 'the process exits')
            self._closed = True
            removals = list(self._removals)
            reaper = self._reaper
        for t in removals:
            t.join(10.0)
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join(2.0)

    def _reap(self):
        while True:
            time.sleep(1.0)
            with self._lock:
                if (not self._entries and not self._held) or self._closed:
                    self._reaper = None
                    return
                items = list(self._entries.items())
                held = list(self._held.items())
            for key, h in held:
                why = self._why_release(h)
                if why:
                    with self._lock:
                        if self._held.get(key) is not h:
                            continue
                    self.release(key, why)
            for key, entry in items:
                why = self._why_stop(entry)
                if why:
                    with self._lock:
                        if self._entries.get(key) is entry:
                            self._stop_locked(key, why)

    @staticmethod
    def _why_release(held) -> str | None:
        now = time.monotonic()
        if now - held.since >= _HOLD:
            return 'not committed within %.0fs' % _HOLD
        try:
            here = _ident(os.stat(held.path)) == held.ident
        except OSError:
            here = False
        if here:
            held.gone_since = None
            return None
        if held.gone_since is None:
            held.gone_since = now
        elif now - held.gone_since >= _GONE:
            return 'its file is gone and no seed took it over'
        return None

    @staticmethod
    def _why_stop(entry) -> str | None:
        now = time.monotonic()
        if entry.until is not None and now >= entry.until:
            return 'seed time is up'
        if entry.changed():
            return 'the file changed or disappeared'
        try:
            st = entry.handle.status()
        except RuntimeError:
            return 'the torrent left the session'
        if st.errc.value():
            return 'error: %s' % st.errc.message()
        size = entry.meta.total_size or 1
        if entry.ratio and st.total_payload_upload >= entry.ratio * size:
            return 'upload ratio %.2f reached' % entry.ratio
        if entry.peers:
            from oslo_transfer._drivers.bittorrent import session as sess_mod
            try:
                infos = entry.handle.get_peer_info()
            except RuntimeError:
                infos = []
            # Remembered: a peer that completes may leave at once.
            entry.complete.update(tuple(p.ip) for p in infos
                                  if sess_mod.is_seed(p))
            LOG.debug('bittorrent: seeding %s: peers %s, complete %s',
                      entry.path,
                      [(p.ip, sess_mod.is_seed(p), p.progress)
                       for p in infos], entry.complete)
            ips = {ip for ip, _ in entry.complete}
            if all(ip in ips for ip, _ in entry.peers) and \
                    len(entry.complete) >= len(entry.peers):
                # Linger a little, so that the peers see us complete too
                # before we leave (they stop on the same rule).
                if entry.all_complete_since is None:
                    entry.all_complete_since = now
                elif now - entry.all_complete_since >= _LINGER:
                    return 'every named peer has the whole file'
        return None


class Handle(driver.Seeding):
    """One seed of :data:`SEEDS`, as the caller sees it."""

    def __init__(self, seeds: Seeds, entry: _Entry, listen_port: int):
        super().__init__(entry.meta.info_hash, entry.path,
                         entry.meta.total_size, listen_port)
        self._seeds = seeds
        self._entry = entry

    def wait(self, timeout: float | None = None) -> bool:
        return self._seeds.wait_for(self._entry, timeout)

    def stop(self) -> None:
        self._seeds.stop_entry(self._entry, 'stopped by the caller')

    @property
    def reason(self) -> str | None:
        return self._entry.reason


def _ident(st) -> tuple:
    """Which file: a rename keeps all four, a new file under the name not.

    (An inode number alone may be reused at once by the next file.)
    """
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _size(path, meta) -> int:
    if meta.single_file:
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(path, *f.path))
               for f in meta.files)


#: the seeds of this process
SEEDS = Seeds()
