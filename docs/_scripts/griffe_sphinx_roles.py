"""A griffe extension for the docs site: Sphinx cross-reference roles in docstrings shown as code.

The package's numpydoc docstrings name other objects with Sphinx roles (:func:`extract_features`,
:class:`~napari_flow_features.errors.BadInputError`); mkdocstrings renders docstrings as Markdown,
where a role would show literally. Each becomes inline code, shortened to the last component for a
``~`` target as Sphinx shows it. mkdocs.yml loads it (mkdocstrings' ``extensions`` option).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj):`(~?)([^`]+)`")


def as_code(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class SphinxRolesAsCode(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(as_code, obj.docstring.value)
