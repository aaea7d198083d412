"""MkDocs hooks for the documentation site (mkdocs.yml ``hooks:``; run by ./scripts/docs).

Why a hook and not copies: README.md, CHANGELOG.md and CONTRIBUTING.md live at the repo root,
where people read them, and the site must not drift from them. The hook adds them as pages
(``index.md``, ``changelog.md``, ``contributing.md``) and rewrites the links between the repo's
layout and the site's, so the strict build still checks every one of those links.

It also fails the build when:

* the API reference (``docs/reference.md``) misses a name of ``sayiir.__all__`` or of
  ``sayiir.testing.__all__``, so a new public name cannot ship undocumented;
* a built page loads a stylesheet, script, image or font from another site: the docs must work
  offline and fetch nothing (no web fonts, no CDN).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent

# repo file -> site page
ROOT_PAGES = {
    "README.md": "index.md",
    "CHANGELOG.md": "changelog.md",
    "CONTRIBUTING.md": "contributing.md",
}

_LINK = re.compile(r"\]\((?P<target>[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")
# A resource the browser would fetch from elsewhere: <script|img|iframe|source src=//...>, a
# <link> that loads something (stylesheet, font preload, icon, ...) and CSS url(//...). Plain
# <a href> links to other sites are fine, and so is <link rel="canonical">, which loads nothing.
_EXTERNAL_SRC = re.compile(
    r"<(?:script|img|iframe|source)\b[^>]*\bsrc=[\"']?(?:https?:)?//"
    r"|url\(\s*[\"']?(?:https?:)?//",
    re.IGNORECASE,
)
_LINK_TAG = re.compile(r"<link\b[^>]*>", re.IGNORECASE)
_LINK_LOADS = re.compile(
    r"\brel=[\"']?(?:stylesheet|preload|modulepreload|preconnect|prefetch|dns-prefetch|icon|"
    r"shortcut icon|apple-touch-icon|manifest)\b",
    re.IGNORECASE,
)
_EXTERNAL_HREF = re.compile(r"\bhref=[\"']?(?:https?:)?//", re.IGNORECASE)


def _external_asset(html: str) -> re.Match[str] | None:
    """The first place where ``html`` makes the browser fetch from another site."""
    for tag in _LINK_TAG.finditer(html):
        if _LINK_LOADS.search(tag[0]) and _EXTERNAL_HREF.search(tag[0]):
            return tag
    return _EXTERNAL_SRC.search(html)


# Packages whose ``__all__`` the API reference must cover, each name as ``::: PACKAGE.NAME``.
DOCUMENTED_PACKAGES = ("sayiir", "sayiir.testing")


def _public_names(package: str) -> list[str]:
    """``package.__all__``, read without importing it (the docs tools may run anywhere)."""
    init = ROOT / "src" / Path(*package.split(".")) / "__init__.py"
    tree = ast.parse(init.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            return [str(name) for name in value]
    raise PluginError(f"{init.relative_to(ROOT)} has no __all__")


def _undocumented(markdown: str, package: str) -> list[str]:
    """The names of ``package.__all__`` with no ``::: package.NAME`` line in ``markdown``."""
    pattern = rf"^::: {re.escape(package)}\.(\w+)\s*$"
    documented = set(re.findall(pattern, markdown, re.MULTILINE))
    return [name for name in _public_names(package) if name not in documented]


def _rewrite(markdown: str, page_uri: str) -> str:
    """Turn repo-relative links into site links (``docs/x.md`` -> ``x.md``, ...)."""
    from_root = page_uri in ROOT_PAGES.values()

    def fix(match: re.Match[str]) -> str:
        target, anchor = match["target"], match["anchor"] or ""
        if "://" in target or target.startswith("mailto:"):
            return match[0]
        if from_root:
            if target.startswith("docs/"):
                target = target.removeprefix("docs/")
            elif target in ROOT_PAGES:
                target = ROOT_PAGES[target]
        elif target.startswith("../") and target[3:] in ROOT_PAGES:
            target = ROOT_PAGES[target[3:]]
        return f"]({target}{anchor})"

    return _LINK.sub(fix, markdown)


def on_files(files: Files, config: Any) -> Files:
    for source, page in ROOT_PAGES.items():
        path = ROOT / source
        if not path.is_file():
            raise PluginError(f"{source} is missing at the repo root")
        files.append(File.generated(config, page, content=path.read_text(encoding="utf-8")))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    uri = page.file.src_uri
    if uri == "reference.md":
        for package in DOCUMENTED_PACKAGES:
            missing = _undocumented(markdown, package)
            if missing:
                raise PluginError(
                    f"docs/reference.md does not document these names of {package}.__all__: "
                    + ", ".join(missing)
                    + f" (add a '::: {package}.NAME' line for each)"
                )
    return _rewrite(markdown, uri)


def on_post_page(output: str, page: Any, config: Any) -> str:
    found = _external_asset(output)
    if found is not None:
        start = max(found.start() - 80, 0)
        raise PluginError(
            f"page {page.file.src_uri} loads a resource from another site "
            f"({output[start : found.end() + 60]!r}); the docs must fetch nothing"
        )
    return output
