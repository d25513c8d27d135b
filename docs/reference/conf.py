# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sphinx configuration of the reference site (docs/reference/README.md), made with `antsibull-docs sphinx-init`.

`make docs` builds it offline: intersphinx is off, and the few labels of Ansible's own documentation that the
generated pages cite (common return values, action plugins, ansible.builtin plugins, configuration settings) become
links to that site here, so that `-W` still fails on any other broken reference.
"""

from __future__ import annotations

from docutils import nodes

project = 'ebpf.fleet'
copyright = 'ebpf.fleet contributors'  # pylint: disable=redefined-builtin
title = 'ebpf.fleet reference'
html_short_title = 'ebpf.fleet reference'

extensions = ['sphinx.ext.autodoc', 'sphinx.ext.intersphinx', 'sphinx_antsibull_ext']

pygments_style = 'ansible'
highlight_language = 'YAML+Jinja'

html_theme = 'sphinx_ansible_theme'
html_show_sphinx = False
display_version = False
html_use_smartypants = True
html_use_modindex = False
html_use_index = False
html_copy_source = False

# no network at build time: Ansible's own labels are resolved by ansible_docsite_reference below
intersphinx_mapping: dict = {}

default_role = 'any'
nitpicky = True

ANSIBLE_DOCS = 'https://docs.ansible.com/projects/ansible/devel/'
ANSIBLE_LABELS = {
    'action_plugins': 'plugins/action.html',
    'ansible_configuration_settings': 'reference_appendices/config.html',
    'common_return_values': 'reference_appendices/common_return_values.html',
}
BUILTIN_PREFIX = 'ansible_collections.ansible.builtin.'


def ansible_docsite_reference(app, env, node, contnode):  # pylint: disable=unused-argument
    """A link into Ansible's documentation for one of its labels, None for anything else (Sphinx then warns)."""
    if node.get('refdomain') != 'std':
        return None
    target = node.get('reftarget', '')
    if node.get('reftype') == 'ref' and target in ANSIBLE_LABELS:
        path = ANSIBLE_LABELS[target]
    elif node.get('reftype') == 'ref' and target.startswith(BUILTIN_PREFIX):
        path = 'collections/ansible/builtin/%s.html' % target[len(BUILTIN_PREFIX) :]
    elif node.get('reftype') == 'envvar' and target.startswith('ANSIBLE_'):
        path = 'reference_appendices/config.html#envvar-%s' % target
    else:
        return None
    reference = nodes.reference('', '', internal=False, refuri=ANSIBLE_DOCS + path)
    reference.append(contnode)
    return reference


def setup(app):
    app.connect('missing-reference', ansible_docsite_reference)
