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


def at_least(minimum, kind=int):
    """An argparse ``type``: a number of ``kind`` that is ``>= minimum``.

    :param minimum: the smallest accepted value.
    :param kind: ``int`` or ``float``.
    :returns: a callable for ``add_argument(type=...)``.
    """
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                'expected %s, not %r' % (
                    'an integer' if kind is int else 'a number', text))
        if not value >= minimum:
            raise argparse.ArgumentTypeError(
                'must be %s or more, not %r' % (minimum, text))
        return value

    convert.__name__ = '%s >= %s' % (kind.__name__, minimum)
    return convert
