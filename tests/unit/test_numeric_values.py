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

"""Numeric config and command-line values, hostile ones included.

Properties (hypothesis, the seeded ``ci`` profile; ``tools/fuzz.sh`` runs
them longer): a numeric option either reads as a finite value within its
bounds or raises ``ValueError``; a numeric command-line argument either
parses within its bounds or makes the command a usage error (exit 2),
never a traceback.  ``nan`` passed every ``min``/``max`` check, ``inf``
and ``1e400`` reached ``threading.Timer`` and sockets (``OverflowError``),
and ``"²"`` passed ``str.isdigit()`` then failed in ``int()``.
"""

import argparse
import contextlib
import io
import math

import hypothesis
from hypothesis import strategies as st
from oslo_config import types
import pytest

from oslo_transfer import _utils
from oslo_transfer.cmd import _args
from oslo_transfer.cmd import copy as copy_cmd
from oslo_transfer.cmd import main as main_mod
from oslo_transfer.cmd import serve as serve_cmd
from oslo_transfer import fixture
from oslo_transfer import opts
from tests.unit import fakes

#: text that looks like a number, or nearly
_NUMBERISH = st.one_of(
    st.sampled_from(['nan', 'NaN', '-nan', 'inf', '-inf', 'Infinity',
                     '1e400', '-1e400', '1e308', '9' * 400, '9' * 5000,
                     '0x10', '1_000', '²', '١٢', '٣.٥', '', ' ', '-0',
                     '0.0', '2e-400', '9223372036854775808',
                     '18446744073709551616', '-9223372036854775809',
                     '65536', '0-0', '1-65536', '65535-1']),
    st.integers(min_value=-2 ** 70, max_value=2 ** 70).map(str),
    st.floats().map(repr),
    st.text(max_size=30),
)


def _numeric_options():
    """Every numeric option of the library and its in-tree drivers."""
    found = []
    for group, options in opts.list_opts():
        for opt in options:
            if isinstance(opt.type, (types.Integer, types.Float)):
                found.append(('%s.%s' % (group, opt.name), opt))
    return found


NUMERIC = _numeric_options()


def test_the_options_were_found():
    names = [n for n, _ in NUMERIC]
    assert 'oslo_transfer.total_timeout' in names
    assert 'oslo_transfer_sftp.idle_timeout' in names
    assert len(names) > 20


@pytest.mark.parametrize('name,opt', NUMERIC, ids=[n for n, _ in NUMERIC])
def test_every_numeric_option_is_bounded(name, opt):
    """A bound on each, and no empty value where None is not the default.

    No value then reaches a socket, a timer or libtorrent that they cannot
    take, and none asks for unbounded memory.
    """
    assert opt.type.min is not None and opt.type.max is not None, name
    assert opt.type.max <= 2 ** 63 - 1
    if isinstance(opt.type, types.Float):
        assert isinstance(opt, _utils.FiniteFloatOpt), name
        assert math.isfinite(opt.type.max)
        for text in ('nan', 'inf', '-inf', '1e400'):
            with pytest.raises(ValueError):
                opt.type(text)
    else:
        assert isinstance(opt, _utils.IntOpt), name
    if opt.default is not None:
        with pytest.raises(ValueError):
            opt.type('')


@hypothesis.given(index=st.integers(min_value=0, max_value=len(NUMERIC) - 1),
                  text=_NUMBERISH)
def test_a_numeric_option_is_in_bounds_or_a_value_error(index, text):
    name, opt = NUMERIC[index]
    try:
        value = opt.type(text)
    except ValueError:
        return
    if value is None:
        # Empty: "unset", only where None is the default.
        assert opt.default is None, (name, text)
        return
    if isinstance(opt.type, types.Float):
        assert math.isfinite(value), (name, text, value)
    else:
        assert type(value) is int, (name, text, value)
    assert opt.type.min <= value <= opt.type.max, (name, text)


@pytest.mark.parametrize('value', ['nan', 'inf', '1e400', '-1', '1e9', ''])
def test_a_hostile_total_timeout_in_a_config_file_is_a_usage_error(
        tmp_path, value):
    conf_file = tmp_path / 'bad.conf'
    conf_file.write_text('[oslo_transfer]\ntotal_timeout = %s\n' % value)
    src = tmp_path / 'src'
    src.write_bytes(b'x' * 100)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main_mod.main(['--config-file', str(conf_file), 'copy',
                              '--no-progress', str(src),
                              str(tmp_path / 'dst')])
    assert code == main_mod.EXIT_USAGE, err.getvalue()
    assert 'total_timeout' in err.getvalue()
    assert 'Traceback' not in err.getvalue()
    assert not (tmp_path / 'dst').exists()


# -- the command line ---------------------------------------------------------

#: (sub-command and the other arguments it needs, flag, bounds)
_FLAGS = [
    (['copy', 'a', 'b'], '--segments', (1, 64)),
    (['copy', 'a', 'b'], '--peers', (1, _args.MAX_INT)),
    (['copy', 'a', 'b'], '--seed-time', (0, _args.MAX_SECONDS)),
    (['copy', 'a', 'b'], '--rate', (0, _args.MAX_INT)),
    (['make-torrent', 'f', '-o', 'f.torrent'], '--piece-size',
     (1, 256 * 1024 * 1024)),
    (['serve', '--ftp', 'd'], '--max-connections', (1, _args.MAX_INT)),
]

_PARSER = main_mod.build_parser()


def _parse(argv):
    """Parse ``argv``: the namespace, or None for a usage error (exit 2)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return _PARSER.parse_args(argv)
        except SystemExit as exc:
            assert exc.code == main_mod.EXIT_USAGE
            assert 'Traceback' not in err.getvalue()
            assert 'usage:' in err.getvalue()
            return None


@hypothesis.given(index=st.integers(min_value=0, max_value=len(_FLAGS) - 1),
                  text=_NUMBERISH)
def test_a_numeric_argument_parses_in_bounds_or_is_a_usage_error(
        index, text):
    command, flag, (low, high) = _FLAGS[index]
    hypothesis.assume(not text.startswith('-') or text[1:2].isdigit())
    args = _parse(command[:1] + ['%s=%s' % (flag, text)] + command[1:])
    if args is None:
        return
    value = getattr(args, flag[2:].replace('-', '_'))
    assert low <= value <= high, (flag, text, value)


@hypothesis.given(text=_NUMBERISH)
def test_an_address_or_port_range_parses_or_is_refused(text):
    for parse, check in (
            (serve_cmd.parse_bind,
             lambda v: 0 <= v[1] <= 65535),
            (serve_cmd.parse_port_range,
             lambda v: v and 0 < v[0] <= v[-1] <= 65535)):
        for candidate in (text, '127.0.0.1:' + text, text + '-60000'):
            try:
                value = parse(candidate)
            except argparse.ArgumentTypeError:
                continue
            assert check(value), (candidate, value)


def test_a_superscript_digit_is_not_a_port():
    """``"²".isdigit()`` is true and ``int("²")`` a ValueError."""
    for bad in ('127.0.0.1:²', '127.0.0.1:٢١', '127.0.0.1:' + '9' * 5000):
        with pytest.raises(argparse.ArgumentTypeError):
            serve_cmd.parse_bind(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        serve_cmd.parse_port_range('²-³')


def test_a_rate_of_400_digits_is_refused_not_an_overflow():
    for bad in ('9' * 400, '9' * 400 + 'G', '99999999999T', '٣M'):
        with pytest.raises(ValueError):
            copy_cmd.parse_rate(bad)
    assert copy_cmd.parse_rate('1.5K') == 1536
    assert copy_cmd.parse_rate('0') == 0


def test_the_command_line_and_the_options_agree_on_time():
    assert _args.MAX_SECONDS == _utils.MAX_SECONDS


def test_the_seed_time_refuses_infinity():
    convert = _args.at_least(0, float)
    for bad in ('inf', 'nan', '1e400', '-1'):
        with pytest.raises(argparse.ArgumentTypeError):
            convert(bad)
    assert convert('2.5') == 2.5


# -- the API: the caller's arguments are ValueError ---------------------------

_BAD_RATES = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -1, -0.5, 2 ** 63,
                     10 ** 30, '100', b'1', None.__class__, True, [1]]),
    st.integers(max_value=-1),
    st.integers(min_value=2 ** 63),
    st.floats(max_value=-1e-9) | st.floats(min_value=2.0 ** 63),
)


@hypothesis.settings(max_examples=50)
@hypothesis.given(rate=_BAD_RATES)
def test_a_hostile_rate_is_a_value_error(rate):
    store = fixture.MemoryStore()
    with fakes.make_transfer(store) as t:
        with pytest.raises(ValueError, match='rate'):
            t.copy('memory://store/none', '/nonexistent-dir/x', rate=rate)


@pytest.mark.parametrize('segments',
                         [0, -1, 1.5, '4', math.nan, None.__class__])
def test_hostile_segments_are_a_value_error(segments):
    store = fixture.MemoryStore()
    with fakes.make_transfer(store) as t:
        with pytest.raises(ValueError, match='segments'):
            t.copy('memory://store/none', '/nonexistent-dir/x',
                   segments=segments)
