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

"""Amazon S3 and S3-compatible object stores (Ceph RGW, MinIO) by boto3.

``s3://BUCKET/KEY`` is served by the endpoint of ``[oslo_transfer_s3]``;
the entry point names :class:`S3Driver`.
"""

from oslo_transfer._drivers.s3.driver import S3Driver

__all__ = ['S3Driver']
