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

"""Hypothesis profiles of the unit suite.

``ci`` (the default) is seeded and bounded, so that a run is repeatable and
fast and writes no example database; ``fuzz`` runs many more examples with
a random seed (``HYPOTHESIS_PROFILE=fuzz``).
"""

import os

import hypothesis

hypothesis.settings.register_profile(
    'ci', max_examples=200, deadline=None, derandomize=True, database=None,
    print_blob=True)
hypothesis.settings.register_profile(
    'fuzz', max_examples=20000, deadline=None, database=None,
    print_blob=True)
hypothesis.settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))
