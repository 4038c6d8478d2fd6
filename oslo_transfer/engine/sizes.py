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

"""Sizes that drivers report, checked once for every driver.

A size comes from a server (HTTP ``Content-Length``, FTP ``SIZE``, SFTP
attributes, which paramiko reads as unsigned 64-bit, a torrent's
lengths) or from a third-party driver.  Before the engine sizes a
``.part`` file with it, allocates for it or compares with it, the size
must be what a file can have: an ``int`` from 0 to 2**63-1 (an ``off_t``).
Anything else is a :class:`~oslo_transfer.exceptions.ProtocolError` that
is not retryable (the same question gets the same answer), naming the
masked URL, so that no ``OverflowError`` from ``ftruncate``, no negative
length and no float reaches the file.
"""

import logging

from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

__all__ = ['MAX_SIZE', 'checked_stat', 'checked_written_size']

#: the largest size a file can have (``off_t``)
MAX_SIZE = 2 ** 63 - 1


def _valid(value) -> bool:
    # bool is an int; a float (or a numpy integer) is not a size.
    return type(value) is int and 0 <= value <= MAX_SIZE


def checked_stat(st, location) -> driver_mod.Stat:
    """``st`` (a driver's :class:`~oslo_transfer.driver.Stat`), checked.

    :raises ProtocolError: not a ``Stat``, or a size that is not an
        integer from 0 to 2**63-1 (not retryable).
    """
    if not isinstance(st, driver_mod.Stat):
        raise exceptions.ProtocolError(
            'the driver of %s returned %s from stat(), not a Stat'
            % (location.masked, type(st).__name__), url=location.masked,
            retryable=False)
    if st.size is not None and not _valid(st.size):
        raise exceptions.ProtocolError(
            '%s has an impossible size: %.40r (a size is an integer from '
            '0 to 2**63-1)' % (location.masked, st.size),
            url=location.masked, retryable=False)
    if st.max_segments is not None and (type(st.max_segments) is not int
                                        or st.max_segments < 1):
        raise exceptions.ProtocolError(
            'the driver of %s gave max_segments %.40r, not a positive '
            'integer' % (location.masked, st.max_segments),
            url=location.masked, retryable=False)
    return st


def checked_written_size(value, size, location) -> int:
    """A resumable upload's ``written_size()``, or 0 to start again.

    A value that is not an integer from 0 to ``size`` (to 2**63-1 when the
    size is unknown) cannot be where the upload continues.
    """
    if not _valid(value) or (size is not None and value > size):
        if value:
            LOG.warning('%s holds %.40r bytes of an upload of %s bytes: '
                        'starting again from zero', location.masked, value,
                        size)
        return 0
    return value
