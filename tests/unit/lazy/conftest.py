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

"""The lazy image tests' fixtures: an image, its blockmap and a cache.

The image is :func:`helpers.image`'s default, in a memory store.
"""

import pytest

from tests.unit.lazy import helpers

DATA = helpers.image()


@pytest.fixture
def bm(tmp_path):
    """The blockmap of :data:`DATA` (the trusted manifest)."""
    return helpers.make_blockmap(tmp_path, DATA)


@pytest.fixture
def fix():
    """A fixture Transfer whose store holds :data:`DATA` at ``URL``."""
    with helpers.transfer() as f:
        f.store.put(helpers.URL, DATA)
        yield f


@pytest.fixture
def cache(tmp_path):
    """A cache path in a directory of its own."""
    d = tmp_path / 'cache'
    d.mkdir()
    return str(d / 'image.raw')
