"""Sphinx configuration of wspy's documentation: `make docs` builds it into build/docs."""

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, ROOT)     # the checkout's wspy, not an installed one

import wspy  # noqa: E402
from sphinx.ext.napoleon.docstring import GoogleDocstring  # noqa: E402
from sphinx.pycode import ModuleAnalyzer  # noqa: E402

project = 'wspy'
author = 'wspy contributors'
copyright = 'wspy contributors, BSD 3-clause'
version = release = wspy.__version__

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.viewcode',
]
source_suffix = {'.md': 'markdown', '.rst': 'restructuredtext'}
exclude_patterns = ['_build']
root_doc = 'index'
# `name` in a docstring is code, as in the Markdown pages.
default_role = 'literal'

myst_enable_extensions = ['colon_fence', 'deflist']
myst_heading_anchors = 3

# wspy.wsgi.gevent and wspy.wsgi.gunicorn subclass their classes; `make docs` installs neither.
autodoc_mock_imports = ['gevent', 'gunicorn']
autodoc_member_order = 'bysource'
autodoc_default_options = {'members': True, 'show-inheritance': True}
autodoc_typehints = 'signature'
autodoc_preserve_defaults = True
autoclass_content = 'both'
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = 'furo'
html_title = f'wspy {release}'


def _attribute_docstring_as_written(self: GoogleDocstring) -> list[str]:
    """wspy types attributes by annotation: a colon in their docstring is prose, not a type."""
    return self._consume_to_end()


# napoleon reads "text: more" on an attribute's first line as "type: description".
GoogleDocstring._parse_attribute_docstring = _attribute_docstring_as_written


def _comment_where_defined(app: object, what: str, name: str, obj: object, options: object,
                           lines: list[str]) -> None:
    """`wspy.OPCODE_TEXT` and the other constants `wspy` imports: their `#:` comment.

    autodoc looks for a constant's comment in the module it is documented
    from (`wspy`), where an import has none, and then shows int's docstring.
    """
    module_name, _, attribute = name.rpartition('.')
    if what != 'data' or module_name != 'wspy':
        return
    for defining in sorted(key for key in sys.modules if key.startswith('wspy.')):
        if getattr(sys.modules[defining], attribute, None) != obj:
            continue
        comment = ModuleAnalyzer.for_module(defining).find_attr_docs().get(('', attribute))
        if comment:
            lines[:] = list(comment)
            return


def setup(app: object) -> None:
    # Before napoleon's handler (priority 500), which then reads the comment.
    app.connect('autodoc-process-docstring', _comment_where_defined,  # type: ignore[attr-defined]
                priority=400)
