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

"""Sphinx configuration of the oslo.transfer documentation.

Build with ``tox -e docs`` (``sphinx-build -W -b html doc/source
doc/build/html``): warnings are errors.  The API reference imports the
package, so oslo.transfer must be installed (``pip install -e .``).
"""

import importlib.util
import logging

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.viewcode',
    # .. show-options:: (configuration reference from the option help)
    'oslo_config.sphinxext',
    # writes the sample configuration file at build time
    'oslo_config.sphinxconfiggen',
]

# openstackdocstheme when it is installed (doc/requirements.txt), the
# default Sphinx theme otherwise.
if importlib.util.find_spec('openstackdocstheme') is not None:
    extensions.append('openstackdocstheme')
    html_theme = 'openstackdocs'
    openstackdocs_repo_name = 'openstack/oslo.transfer'
    openstackdocs_bug_project = 'oslo.transfer'
    openstackdocs_bug_tag = 'docs'
    openstackdocs_auto_name = False
    openstackdocs_pdf_link = False
else:
    html_theme = 'alabaster'

project = 'oslo.transfer'
copyright = '2026, OpenStack Foundation'
source_suffix = {'.rst': 'restructuredtext'}
master_doc = 'index'
exclude_patterns = ['_build']
pygments_style = 'native'
# Plain ``::`` blocks hold shell sessions and plan output, not Python.
highlight_language = 'none'
add_module_names = True
html_static_path = []
htmlhelp_basename = 'oslotransferdoc'

# -- oslo.config --------------------------------------------------------------

# The sample configuration is generated into doc/build/ (ignored by git),
# from the same generator file that ``tox -e genconfig`` uses, and shown by
# configuration/index.rst.
config_generator_config_file = '../../etc/oslo-config-generator/' \
    'oslo-transfer.conf'
sample_config_basename = '../build/oslo-transfer'

# -- autodoc ------------------------------------------------------------------

autodoc_member_order = 'bysource'
autodoc_typehints = 'description'

# Driver pages (doc/source/drivers/*.rst) land one at a time with their
# drivers; until the first one does, the ``drivers/*`` glob of the index
# matches nothing.  Older Sphinx releases let suppress_warnings silence
# that; Sphinx 9 logs it without a warning type, so a filter drops exactly
# that one message.
suppress_warnings = ['toc.empty_glob']


class _EmptyDriversGlob(logging.Filter):
    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:  # noqa: never hide a warning by accident
            return True
        return not (message.startswith('toctree glob pattern') and
                    "'drivers/*'" in message)


def setup(app):
    logging.getLogger('sphinx.sphinx.directives.other').addFilter(
        _EmptyDriversGlob())
