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

"""The ``sftp`` driver: SFTP with paramiko.

The entry point names :class:`SFTPDriver`.  Its modules, by job:

* :mod:`.driver`: the driver and its options;
* :mod:`.session`: SSH sessions (host keys, login, errors);
* :mod:`.pipeline`: pipelined SFTP reads and writes (a window of requests
  in flight).
"""

from oslo_transfer._drivers.sftp.driver import SFTPDriver

__all__ = ['SFTPDriver']
