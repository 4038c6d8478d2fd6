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

"""``oslo-transfer serve --ftp DIR``: share a directory by FTP (pyftpdlib).

For peers in an isolated network that can reach this host but share no
storage with it.  Safe by default:

* read-only unless ``--writable`` is given, and anonymous users can never
  write (``--writable`` needs ``--user``);
* listens only on the address given with ``--bind`` (default
  ``127.0.0.1:2121``); port 0 picks a free port, printed on start;
* the password comes from ``--password-file`` or the environment variable
  ``OSLO_TRANSFER_FTP_PASSWORD``, never from the command line (which other
  users can read in ``ps``);
* passive mode only, data connections only from the control connection's
  address (pyftpdlib refuses foreign addresses), optional passive port
  range and announced address for NAT;
* SIGTERM or SIGINT closes every connection and exits with status 0.

``python -m oslo_transfer.cmd.serve ARGS`` is ``oslo-transfer serve ARGS``.
"""

import argparse
import errno
import logging
import os
import signal
import sys

from oslo_transfer.cmd import _args

LOG = logging.getLogger(__name__)

PASSWORD_ENV = 'OSLO_TRANSFER_FTP_PASSWORD'

#: pyftpdlib permissions: list and read; write adds append, delete,
#: rename, mkdir and store (never chmod).
READ_PERMS = 'elr'
WRITE_PERMS = 'elradfmw'

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def parse_bind(text: str) -> tuple:
    """``HOST:PORT`` or ``[V6]:PORT`` -> ``(host, port)``."""
    host, sep, port = text.rpartition(':')
    number = _args.ascii_int(port)
    if not sep or not host or number is None or number > 65535:
        raise argparse.ArgumentTypeError(
            'expected HOST:PORT (e.g. 192.0.2.10:2121), not %r'
            % _args._shorten(text))
    if host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
    return host, number


def parse_port_range(text: str) -> list:
    """``60000-60099`` -> the list of ports."""
    first, sep, last = text.partition('-')
    first, last = _args.ascii_int(first), _args.ascii_int(last)
    if not sep or first is None or last is None or \
            not 0 < first <= last <= 65535:
        raise argparse.ArgumentTypeError(
            'expected FIRST-LAST (e.g. 60000-60099), not %r'
            % _args._shorten(text))
    return list(range(first, last + 1))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--ftp', metavar='DIR', required=True,
                   help='directory to share by FTP')
    p.add_argument('--bind', metavar='HOST:PORT', type=parse_bind,
                   default=('127.0.0.1', 2121),
                   help='address to listen on (default 127.0.0.1:2121; '
                        'port 0 picks a free one)')
    p.add_argument('--writable', action='store_true',
                   help='let the user upload, rename and delete (needs '
                        '--user; anonymous access is always read-only)')
    p.add_argument('--user', metavar='NAME',
                   help='require this user name (default: anonymous, '
                        'read-only)')
    p.add_argument('--password-file', metavar='FILE',
                   help='file whose first line is the password of --user '
                        '(or set %s)' % PASSWORD_ENV)
    p.add_argument('--passive-ports', metavar='FIRST-LAST',
                   type=parse_port_range,
                   help='port range for passive data connections (for '
                        'firewalls)')
    p.add_argument('--masquerade-address', metavar='IP',
                   help='address announced in PASV replies (behind NAT); '
                        'oslo.transfer clients ignore it and use the '
                        'control connection\'s address')
    p.add_argument('--max-connections', type=_args.at_least(1), default=64,
                   metavar='N',
                   help='simultaneous connections (default 64)')


def register(subparsers) -> None:
    p = subparsers.add_parser(
        'serve', help='share a local directory by FTP for peers in an '
                      'isolated network (read-only unless --writable)')
    add_arguments(p)
    p.set_defaults(func=run)


def _password(args):
    if args.password_file:
        with open(args.password_file) as f:
            return f.readline().rstrip('\r\n')
    return os.environ.get(PASSWORD_ENV)


def _fail(message, code=EXIT_USAGE) -> int:
    print('oslo-transfer serve: %s' % message, file=sys.stderr)
    return code


def _dtp_handle_error(self):
    """Tell the client why a transfer broke: 452 when the disk is full.

    pyftpdlib answers "426 None" to a failed file write; a client cannot
    tell a full disk (final) from a broken connection (worth a retry).
    """
    from pyftpdlib.handlers import DTPHandler
    from pyftpdlib.log import logger

    cause = getattr(sys.exc_info()[1], '__cause__', None)
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC,
                                                      errno.EDQUOT):
        self._resp = ('452 Insufficient storage space: %s; transfer '
                      'aborted.' % os.strerror(cause.errno), logger.warning)
        self.close()
        return
    if isinstance(cause, OSError) and cause.errno is not None:
        self._resp = ('451 %s; transfer aborted.'
                      % os.strerror(cause.errno), logger.warning)
        self.close()
        return
    DTPHandler.handle_error(self)


def build_server(args):
    """The pyftpdlib server for ``args`` (not started)."""
    from pyftpdlib import authorizers
    from pyftpdlib import handlers
    from pyftpdlib import servers

    root = os.path.realpath(args.ftp)
    authorizer = authorizers.DummyAuthorizer()
    if args.user:
        perm = WRITE_PERMS if args.writable else READ_PERMS
        authorizer.add_user(args.user, args.password, root, perm=perm)
    else:
        authorizer.add_anonymous(root, perm=READ_PERMS)
    # Subclasses, so that the settings stay out of pyftpdlib's globals.
    dtp = type('ServeDTPHandler', (handlers.DTPHandler,), {
        'handle_error': _dtp_handle_error})
    handler = type('ServeHandler', (handlers.FTPHandler,), {
        'dtp_handler': dtp,
        'authorizer': authorizer,
        'banner': 'oslo-transfer serve ready',
        'passive_ports': args.passive_ports,
        'masquerade_address': args.masquerade_address,
        'permit_foreign_addresses': False,
        'permit_privileged_ports': False,
    })
    server = servers.FTPServer(args.bind, handler)
    server.max_cons = args.max_connections
    return server, root


def run(args) -> int:
    """Serve until SIGTERM/SIGINT; the exit code."""
    try:
        import pyftpdlib  # noqa: F401
    except ImportError:
        return _fail('pyftpdlib is not installed: pip install '
                     '"oslo.transfer[ftp]" (Debian: python3-pyftpdlib)',
                     EXIT_ERROR)
    if not os.path.isdir(args.ftp):
        return _fail('%s is not a directory' % args.ftp)
    if args.writable and not args.user:
        return _fail('--writable needs --user: anonymous access is always '
                     'read-only')
    args.password = None
    if args.user:
        try:
            args.password = _password(args)
        except OSError as exc:
            return _fail('cannot read the password file: %s' % exc)
        if not args.password:
            return _fail('--user needs a password: --password-file FILE or '
                         'the environment variable %s' % PASSWORD_ENV)
    try:
        server, root = build_server(args)
    except OSError as exc:
        return _fail('cannot listen on %s:%d: %s' % (args.bind[0],
                                                     args.bind[1],
                                                     exc.strerror or exc),
                     EXIT_ERROR)

    def stop(signum, _frame):
        LOG.info('signal %d: closing every connection', signum)
        raise SystemExit(0)

    old = signal.signal(signal.SIGTERM, stop)
    host, port = server.socket.getsockname()[:2]
    mode = 'read-write' if args.writable else 'read-only'
    who = 'user %s' % args.user if args.user else 'anonymous'
    print('serving %s on ftp://%s:%d/ (%s, %s)'
          % (root, _args.host_text(host), port, mode, who),
          flush=True)
    try:
        # handle_exit: SystemExit/KeyboardInterrupt end the loop and
        # close every connection.
        server.serve_forever(timeout=0.5, handle_exit=True)
    finally:
        signal.signal(signal.SIGTERM, old)
        server.close_all()
    print('stopped', flush=True)
    return EXIT_OK


def main(argv=None) -> int:
    """``python -m oslo_transfer.cmd.serve ARGS``: ``oslo-transfer serve``."""
    from oslo_transfer.cmd import main as main_mod
    if argv is None:
        argv = sys.argv[1:]
    return main_mod.main(['serve'] + list(argv))


if __name__ == '__main__':
    sys.exit(main())
