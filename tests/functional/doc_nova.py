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

"""The Nova guide's example: the image cache of a compute node.

``doc/source/user/nova.rst`` includes this file; the functional tests run
it against nginx, with a primary location that answers 503, and with
eight threads asking for the same image.
"""

import logging
import os

import oslo_transfer

LOG = logging.getLogger(__name__)


def fetch_to_base(transfer, context, image, base_dir, progress=None):
    """Download ``image`` into ``base_dir`` once; return its path.

    :param transfer: the service's ``oslo_transfer.Transfer``.
    :param context: the request context (``oslo_context.RequestContext``);
        made current around each progress call, so that the log lines of
        the callback carry the request id.
    :param image: Glance's image record: ``id``, ``size``,
        ``os_hash_algo``, ``os_hash_value`` and ``locations`` (the direct
        URLs, best first).
    :param base_dir: ``[DEFAULT] instances_path``/_base.
    :param progress: ``progress(done, total)``, or None.
    :returns: the path of the verified image.
    """
    dest = os.path.join(base_dir, image['id'])
    source = oslo_transfer.Source(
        urls=[loc['url'] for loc in image['locations']],
        size=image['size'],
        checksum={'os_hash_algo': image['os_hash_algo'],
                  'os_hash_value': image['os_hash_value']})
    # Another location answers at once if this one fails: one quick retry
    # per location, then the next; the full backoff only on the last one.
    result = transfer.copy(source, dest, progress=progress, context=context,
                           mode=0o644, retries=3, retry_backoff=0.5)
    if result.bytes_transferred:
        LOG.info('image %s: %d bytes from %s in %.1fs', image['id'],
                 result.bytes_transferred, result.url, result.elapsed)
    return dest
