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

"""The ``ftp`` driver: FTP and explicit FTPS with ftplib.

The entry point names :class:`FTPDriver`.  Its modules, by job:

* :mod:`.driver`: the driver (options, ranged reads, resumable uploads);
* :mod:`.session`: one logged-in FTP session (passive mode, TLS, reply
  codes turned into our exceptions).
"""

from oslo_transfer._drivers.ftp.driver import FTPDriver

__all__ = ['FTPDriver']
