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

"""The ``[oslo_transfer_s3]`` options (no boto3 import here)."""

from oslo_config import cfg

from oslo_transfer import _utils

MiB = 1024 * 1024

OPTS = [
    cfg.URIOpt('endpoint_url', schemes=['http', 'https'],
               help='URL of the S3 endpoint every s3://BUCKET/KEY is read '
                    'from and written to.  Possible values: unset (Amazon '
                    'S3 of region_name), or http(s)://HOST[:PORT] of a '
                    'Ceph RGW, MinIO or other S3-compatible server.  The '
                    'URL policy ([oslo_transfer] allowed_schemes, '
                    'denied_networks) judges this endpoint, not the bucket '
                    'name.  A Location may name its own (Location.options '
                    'endpoint_url, as region_name and addressing_style).  '
                    'Related options: region_name, addressing_style.'),
    cfg.StrOpt('region_name', default='us-east-1',
               help='Region the requests are signed for.'),
    cfg.StrOpt('access_key_id',
               help='Access key id used when a location carries none (a '
                    'Location\'s credentials username, or the URL\'s user '
                    'name).  Unset with secret_access_key unset: boto3\'s '
                    'own chain (environment, ~/.aws, instance profile).  '
                    'Related options: secret_access_key, session_token.'),
    cfg.StrOpt('secret_access_key', secret=True,
               help='Secret access key that goes with access_key_id.'),
    cfg.StrOpt('session_token', secret=True,
               help='Session token of temporary credentials; used only '
                    'with the access key of this section, never with a '
                    'location\'s own key pair.'),
    cfg.StrOpt('addressing_style', default='auto',
               choices=[('auto', 'path style with endpoint_url, virtual '
                                 'hosted style on Amazon S3'),
                        ('path', 'ENDPOINT/BUCKET/KEY'),
                        ('virtual', 'BUCKET.ENDPOINT/KEY')],
               help='How the bucket is named in requests.'),
    cfg.BoolOpt('verify', default=True,
                help='Verify the endpoint\'s TLS certificate.  Never turn '
                     'it off in production.  Related options: ca_file.'),
    cfg.StrOpt('ca_file',
               help='CA bundle to verify the endpoint with (default: the '
                    'system\'s).'),
    _utils.IntOpt('multipart_threshold', default=16 * MiB, min=5 * MiB,
                  max=5 * 1024 * 1024 * MiB,
                  help='Uploads of at least this many bytes (or of unknown '
                       'size past it) go as multipart uploads, resumable part '
                       'by part; smaller ones as one PUT at commit.  Related '
                       'options: part_size.'),
    _utils.IntOpt('part_size', default=8 * MiB, min=5 * MiB,
                  max=5 * 1024 * MiB,
                  help='Bytes per part of a multipart upload (S3: 5 MiB to '
                       '5 GiB, at most 10000 parts; an object of known size '
                       'that needs more gets larger parts).  Memory: about '
                       'upload_concurrency + 1 parts.  A resumed upload '
                       're-sends at most the parts in flight.  Related '
                       'options: upload_concurrency, multipart_threshold.'),
    _utils.IntOpt('upload_concurrency', default=4, min=1, max=64,
                  help='Parts of one multipart upload sent at once (memory: '
                       'this many times part_size).'),
]

#: what ``Location.options`` may set for one location (the same options:
#: a location's value wins over the configured one)
LOCATION_OPTS = [o for o in OPTS if o.dest in ('endpoint_url', 'region_name',
                                               'addressing_style')]
