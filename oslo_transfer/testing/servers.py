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

"""Helpers to run real servers on loopback for functional tests.

Shipped for driver authors (``from oslo_transfer.testing import servers``);
the in-tree functional tests use the same.

Every functional suite starts its servers the same way: pick a free port,
write a config file into ``tmp_path``, start the server in the foreground,
wait until its port answers, stop it by PID.  :class:`Process` does the
starting, waiting and stopping; :func:`require_binary` turns a missing
server binary into a test *failure* naming the package to install (a
functional test never skips because its server is missing).
"""

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time

LOG = logging.getLogger(__name__)

__all__ = ['free_port', 'wait_for_port', 'port_open', 'require_binary',
           'Process', 'ProcessExited']

LOOPBACK = '127.0.0.1'


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that nothing listens on right now.

    The port is found by binding port 0; a concurrent test may still take
    it before the caller binds it, so servers started with it should be
    retried on a new port when they fail with "address in use"
    (:meth:`Process.start` does not do that; fixtures may).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True if something listens on ``host:port`` now.

    A connection to a port in the ephemeral range that nothing listens on
    yet can succeed by connecting to itself (TCP simultaneous open: the
    kernel picks the destination port as the source port): that one does
    not count, or a server would look up before it bound its port.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            return s.getsockname() != s.getpeername()
    except OSError:
        return False


class ProcessExited(RuntimeError):
    """The server process ended before its port answered."""


def wait_for_port(host: str, port: int, timeout: float = 15.0,
                  process: 'Process | None' = None) -> None:
    """Wait until ``host:port`` accepts connections.

    :param process: when given, fail at once (with its log) if the process
        ends while we wait.
    :raises ProcessExited: the process ended.
    :raises TimeoutError: the port did not answer in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        if port_open(host, port):
            return
        if process is not None and process.poll() is not None:
            raise ProcessExited('%s exited with status %s before %s:%d '
                                'answered; log:\n%s'
                                % (process.name, process.returncode, host,
                                   port, process.log_tail()))
        if time.monotonic() > deadline:
            log = process.log_tail() if process is not None else ''
            raise TimeoutError('nothing answers on %s:%d after %.0fs%s'
                               % (host, port, timeout,
                                  '; log:\n' + log if log else ''))
        time.sleep(0.02)


def wait_for_port_closed(host: str, port: int, timeout: float = 15.0):
    """Wait until nothing accepts connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while port_open(host, port):
        if time.monotonic() > deadline:
            raise TimeoutError('%s:%d still answers after %.0fs'
                               % (host, port, timeout))
        time.sleep(0.02)


def require_binary(name: str, package: str | None = None) -> str:
    """Return the path of ``name``; fail the test if it is not installed.

    :param package: the Debian package that ships it (see bindep.txt).
    """
    path = shutil.which(name)
    if path is None:
        for d in ('/usr/sbin', '/sbin', '/usr/local/sbin'):
            cand = os.path.join(d, name)
            if os.access(cand, os.X_OK):
                path = cand
                break
    if path is None:
        import pytest
        pytest.fail('%s is not installed: install the Debian package %s '
                    '(listed in bindep.txt; "bindep -b test" shows what is '
                    'missing)' % (name, package or name), pytrace=False)
    return path


class Process:
    """A server started in the foreground and stopped by its PID.

    :param argv: the command line.
    :param name: a short name for messages (defaults to ``argv[0]``).
    :param port: a TCP port on ``host`` that answers once the server is
        ready; None means "ready as soon as it runs".
    :param log_path: file that receives stdout and stderr.
    :param stop_signal: the signal that stops the server cleanly.
    """

    def __init__(self, argv, name: str | None = None,
                 port: int | None = None, host: str = LOOPBACK,
                 log_path: str | None = None, env: dict | None = None,
                 cwd: str | None = None,
                 stop_signal: int = signal.SIGTERM,
                 startup_timeout: float = 15.0):
        self.argv = [str(a) for a in argv]
        self.name = name or os.path.basename(self.argv[0])
        self.port = port
        self.host = host
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.stop_signal = stop_signal
        self.startup_timeout = startup_timeout
        self.popen = None
        self._log = None

    # -- state ---------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode if self.popen is not None else None

    def poll(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, limit: int = 4000) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ''
        with open(self.log_path, 'rb') as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode('utf-8', 'replace')

    # -- life cycle ----------------------------------------------------------

    def start(self) -> 'Process':
        """Start the command and wait until its port answers."""
        if self.running:
            raise RuntimeError('%s is already running' % self.name)
        if self._log is not None:
            self._log.close()
        out = subprocess.DEVNULL
        if self.log_path:
            self._log = open(self.log_path, 'ab')
            out = self._log
        LOG.debug('starting %s', ' '.join(self.argv))
        self.popen = subprocess.Popen(self.argv, stdout=out,
                                      stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL,
                                      env=self.env, cwd=self.cwd)
        try:
            if self.port is not None:
                wait_for_port(self.host, self.port, self.startup_timeout,
                              process=self)
        except BaseException:
            self.kill()
            raise
        return self

    def signal(self, signum: int):
        """Send ``signum`` to the process (by PID) if it still runs."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signum)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop by ``stop_signal``; SIGKILL after ``timeout`` seconds.

        Returns once the process is gone and, when a port was given,
        nothing answers on it any more.
        """
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.signal(self.stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                LOG.warning('%s ignored signal %d; killing it', self.name,
                            self.stop_signal)
                self.kill()
        if self.port is not None:
            wait_for_port_closed(self.host, self.port, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL the process (by PID) and reap it."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def restart(self) -> 'Process':
        self.stop()
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return '<Process %s pid=%s port=%s>' % (self.name, self.pid,
                                                self.port)
