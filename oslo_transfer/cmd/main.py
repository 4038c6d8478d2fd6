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

"""The ``oslo-transfer`` command: its one parser and logging set-up.

Each sub-command lives in a module of :data:`COMMAND_MODULES` that defines
``register(subparsers)``; the parser's ``func(args) -> int`` runs it.
``args.conf`` is the ConfigOpts (``--config-file``), ``args.make_transfer()``
builds a :class:`~oslo_transfer.Transfer` on it, which registers every
option.  A sub-command uses the public API only, and so gets its options
and drivers as a service would.  The ``python -m`` entry points of
``oslo_transfer.cmd.torrent`` and ``oslo_transfer.cmd.serve`` (which the
tests and benchmarks start peers with) call :func:`main` too.
"""

import argparse
import importlib
import logging
import sys

from oslo_config import cfg

from oslo_transfer import cmd as cmd_pkg
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

COMMAND_MODULES = (
    'oslo_transfer.cmd.copy',
    'oslo_transfer.cmd.demo',
    'oslo_transfer.cmd.lazy',
    'oslo_transfer.cmd.serve',
    'oslo_transfer.cmd.torrent',
)

#: exit codes, documented in the CLI guide
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_AUTH = 4
EXIT_VERIFY = 5
EXIT_EXISTS = 6
EXIT_CANCELLED = 130


def exit_code(exc: BaseException) -> int:
    """The exit code for an exception (see the CLI guide)."""
    if isinstance(exc, (exceptions.ChecksumMismatch,
                        exceptions.SizeMismatch)):
        return EXIT_VERIFY
    if isinstance(exc, exceptions.SourceNotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, exceptions.AuthenticationFailed):
        return EXIT_AUTH
    if isinstance(exc, exceptions.DestinationExists):
        return EXIT_EXISTS
    if isinstance(exc, (exceptions.InvalidLocation, ValueError)):
        return EXIT_USAGE
    if isinstance(exc, (exceptions.Cancelled, KeyboardInterrupt)):
        return EXIT_CANCELLED
    return EXIT_ERROR


_CONFIG_HELP = ('oslo.config file(s) with [oslo_transfer] and '
                '[oslo_transfer_<driver>] options (repeat; before or after '
                'the sub-command)')
_VERBOSE_HELP = 'log progress (-v) or details (-vv) to stderr'


def _add_global_args(parser, suppress=False):
    """``--config-file`` and ``-v`` on the top parser or a sub-command.

    On a sub-command the options land in their own ``sub_*`` attributes
    and are absent unless given (``argparse.SUPPRESS``), so that the
    sub-command parser does not overwrite what came before it;
    :func:`_merge_global_args` adds them up.
    """
    prefix = 'sub_' if suppress else ''
    extra = {'default': argparse.SUPPRESS} if suppress else {}
    parser.add_argument('--config-file', action='append', metavar='PATH',
                        dest=prefix + 'config_file', help=_CONFIG_HELP,
                        **(extra or {'default': []}))
    parser.add_argument('-v', '--verbose', action='count',
                        dest=prefix + 'verbose', help=_VERBOSE_HELP,
                        **(extra or {'default': 0}))


def _merge_global_args(args):
    args.config_file = (list(args.config_file) +
                        list(getattr(args, 'sub_config_file', [])))
    args.verbose += getattr(args, 'sub_verbose', 0)
    for name in ('sub_config_file', 'sub_verbose'):
        if hasattr(args, name):
            delattr(args, name)
    return args


def build_parser():
    parser = argparse.ArgumentParser(
        prog='oslo-transfer',
        description='Move large byte streams with the right protocol.')
    _add_global_args(parser)
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        mod.register(sub)
    for sub_parser in set(sub.choices.values()):
        _add_global_args(sub_parser, suppress=True)
    return parser


#: Interpreter switch interval of the command (seconds), unless
#: ``[oslo_transfer] switch_interval`` says otherwise.
CLI_SWITCH_INTERVAL = 0.0005


def _make_conf(files):
    conf = cfg.ConfigOpts()
    conf([], project='oslo_transfer', default_config_files=files,
         default_config_dirs=[])
    return conf


def setup_logging(verbose: int) -> None:
    """Log to stderr: warnings, ``-v`` progress, ``-vv`` details."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format='%(levelname)s %(name)s: %(message)s')


def main(argv=None) -> int:
    """Run ``oslo-transfer`` with ``argv`` (default: ``sys.argv[1:]``).

    :returns: the exit code (see the CLI guide).
    """
    parser = build_parser()
    try:
        args = _merge_global_args(parser.parse_args(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    setup_logging(args.verbose)
    try:
        args.conf = _make_conf(args.config_file)
    except cfg.Error as exc:
        print('oslo-transfer: %s' % exc, file=sys.stderr)
        return EXIT_USAGE

    def make_transfer():
        from oslo_transfer import transfer
        t = transfer.Transfer(args.conf)
        if t.conf.oslo_transfer.switch_interval is None:
            # This process is ours: a shorter slice than Python's 5 ms
            # (see the switch_interval option).
            sys.setswitchinterval(CLI_SWITCH_INTERVAL)
        return t

    args.make_transfer = make_transfer
    cmd_pkg.start_collecting()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print('\noslo-transfer: interrupted; partial data is kept for a '
              'resume', file=sys.stderr)
        return EXIT_CANCELLED
    except (exceptions.TransferError, ValueError) as exc:
        print('oslo-transfer: %s: %s' % (type(exc).__name__, exc),
              file=sys.stderr)
        return exit_code(exc)


if __name__ == '__main__':
    sys.exit(main())
