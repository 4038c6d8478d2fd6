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

"""oslo.transfer: move large byte streams with the right protocol.

Scripts call :func:`copy`, :func:`open`, :func:`upload`, :func:`plan` and
:func:`attach`;
services build a :class:`Transfer` on their ``ConfigOpts``.
"""

import importlib

# Where each public name lives.  They are imported on first use (PEP 562)
# so that a program can run code before oslo.config and the engine load:
# the oslo-transfer command defers an import it never needs
# (oslo_transfer.cmd).  ``from oslo_transfer import copy`` and
# ``oslo_transfer.copy`` work as with eager imports.
_EXPORTS = {
    'copy': 'oslo_transfer.api',
    'open': 'oslo_transfer.api',
    'plan': 'oslo_transfer.api',
    'upload': 'oslo_transfer.api',
    'attach': 'oslo_transfer.api',
    'LazyImage': 'oslo_transfer.lazy.image',
    'Checksum': 'oslo_transfer.checksum',
    'CancelToken': 'oslo_transfer.driver',
    'Credentials': 'oslo_transfer.locations',
    'Location': 'oslo_transfer.locations',
    'Source': 'oslo_transfer.locations',
    'Result': 'oslo_transfer.result',
    'Seeding': 'oslo_transfer.driver',
    'Hints': 'oslo_transfer.selector',
    'Plan': 'oslo_transfer.selector',
    'Transfer': 'oslo_transfer.transfer',
    'TransferHandle': 'oslo_transfer.transfer',
}

__all__ = ['copy', 'open', 'upload', 'plan', 'attach', 'Transfer',
           'TransferHandle', 'LazyImage', 'Hints', 'Plan', 'Result',
           'Seeding', 'Source', 'Location', 'Credentials', 'Checksum',
           'CancelToken', 'exceptions']


def __getattr__(name):
    if name == 'exceptions':
        value = importlib.import_module('oslo_transfer.exceptions')
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError('module %r has no attribute %r'
                             % (__name__, name))
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
