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

"""Argument types shared by the sub-commands of ``oslo-transfer``.

A type that rejects a value raises :class:`argparse.ArgumentTypeError`, so
that argparse prints the usage and the reason and the command exits with
status 2 before anything is moved.
"""

import argparse
import math

#: the largest count or size an ``int`` argument takes (an ``off_t``)
MAX_INT = 2 ** 63 - 1
#: the longest time a ``float`` argument takes, in seconds (the bound of
#: the time options, far below ``threading.TIMEOUT_MAX``)
MAX_SECONDS = 10 ** 8


def at_least(minimum, kind=int, maximum=None):
    """An argparse ``type``: a number of ``kind`` within bounds.

    :param minimum: the smallest accepted value.
    :param kind: ``int`` or ``float``.
    :param maximum: the largest accepted value (default: ``2**63 - 1`` for
        an ``int``, :data:`MAX_SECONDS` for a ``float``, which is always
        a number of seconds here).  ``nan`` and
        the infinities are refused.
    :returns: a callable for ``add_argument(type=...)``.
    """
    if maximum is None:
        maximum = MAX_INT if kind is int else MAX_SECONDS

    def convert(text):
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(
                'expected %s, not %r' % (
                    'an integer' if kind is int else 'a number',
                    _shorten(text)))
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(
                'expected a finite number, not %r' % _shorten(text))
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(
                'must be from %s to %s, not %r' % (minimum, maximum,
                                                   _shorten(text)))
        return value

    convert.__name__ = '%s >= %s' % (kind.__name__, minimum)
    return convert


def host_text(host: str) -> str:
    """``host`` as it goes before ``:PORT`` (an IPv6 address bracketed)."""
    return '[%s]' % host if ':' in host else host


def _shorten(text, limit=40):
    """``text`` for a message: at most ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + '...'


def ascii_int(text: str) -> int | None:
    """``text`` as a non-negative decimal integer of ASCII digits, or None.

    (``str.isdigit()`` is true for ``"²"`` and other digits that ``int()``
    refuses or reads otherwise; 20 digits are more than any port or count
    here needs.)
    """
    if not text or len(text) > 20 or not text.isascii() or \
            not text.isdigit():
        return None
    return int(text)
