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

"""Sphinx configuration of the oslo.transfer release notes (reno)."""

import importlib.util

extensions = ['reno.sphinxext']

# openstackdocstheme when it is installed (doc/requirements.txt), the
# default Sphinx theme otherwise.
if importlib.util.find_spec('openstackdocstheme') is not None:
    extensions.append('openstackdocstheme')
    html_theme = 'openstackdocs'
    openstackdocs_repo_name = 'openstack/oslo.transfer'
    openstackdocs_bug_project = 'oslo.transfer'
    openstackdocs_bug_tag = ''
    openstackdocs_auto_name = False
else:
    html_theme = 'alabaster'

project = 'oslo.transfer Release Notes'
copyright = '2026, OpenStack Foundation'
source_suffix = {'.rst': 'restructuredtext'}
master_doc = 'index'
# Release notes are versioned by reno, not by the package.
version = ''
release = ''
exclude_patterns = []
pygments_style = 'native'
html_static_path = []
htmlhelp_basename = 'oslotransferReleaseNotesdoc'
locale_dirs = ['locale/']
