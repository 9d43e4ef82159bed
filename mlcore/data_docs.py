"""Great Expectations Data Docs made safe to open: no markup from data, nothing from the internet.

GX writes most of what it renders raw into HTML (table cells, breadcrumbs, the index
page's table data inside an inline script), so a file named ``<img onerror=...>.png`` or a
batch id with markup would run script in whoever opens the page. We do not try to find
every raw spot in GX's templates; instead every string GX will render from data is
*neutralised* before GX sees it: the six characters that can start markup, an entity or
an attribute/JS-string breakout (``< > & " ' ```) become private-use code points
(U+E000..U+E005). GX's own templates never emit those, so a page GX builds holds no markup
from data at all, whatever template spot the data lands in. When a page is served
(:func:`seal`), each placeholder becomes the HTML character reference of the character it
stands for: element text and attribute values show the original name as plain text,
and inside a JSON data block the reference stays an inert string.

The rest of this module is what the Airflow plugin needs to serve a page: CDN URLs mapped
to the pinned local copies (:func:`localise`), and the Content-Security-Policy
(:func:`content_security_policy`). It imports nothing heavy (the plugin loads it in the
API server); the GX view classes that drop GX's inline scripts live in
:mod:`mlcore.data_docs_views`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import quote

from mlcore.layout import docs_page, docs_path

if TYPE_CHECKING:
    import pandas as pd

ASSETS_ROUTE = "_assets"  # the plugin's static route for the pinned browser assets
ASSET_SCHEME = "mlcore-assets:"  # how our own templates name an asset, whatever the page depth

_PLACEHOLDERS = {"<": "\ue000", ">": "\ue001", "&": "\ue002", '"': "\ue003", "'": "\ue004",
                 "`": "\ue005"}
_NEUTRALISE = str.maketrans(_PLACEHOLDERS)
_RESTORE = str.maketrans({v: k for k, v in _PLACEHOLDERS.items()})
_SEAL = str.maketrans({v: f"&#{ord(k)};" for k, v in _PLACEHOLDERS.items()})
_SPECIAL = re.compile("[<>&\"'`]")
# The same placeholders as JSON escapes, as GX's ``tojson`` data blocks carry them.
_JSON_PLACEHOLDER = re.compile(r"\\u[eE]00([0-5])")
_JSON_SEAL = {str(i): f"&#{ord(k)};" for i, k in enumerate(_PLACEHOLDERS)}


def neutralise(text: str) -> str:
    """``text`` with every markup-significant character replaced by its inert placeholder."""
    return text.translate(_NEUTRALISE)


def restore(text: str) -> str:
    """The original of a :func:`neutralise`-d string (e.g. a key GX reports back)."""
    return text.translate(_RESTORE)


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its string cells neutralised; columns without such characters are not copied.

    Cheap on a night of predictions: a column is rewritten only when one vectorised scan
    finds a special character in it (ids and class names never have one).
    """
    import pandas as pd

    changed = {}
    for name in frame.columns:
        col = frame[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            cats = col.cat.categories
            if cats.dtype == object or pd.api.types.is_string_dtype(cats.dtype):
                if any(isinstance(c, str) and _SPECIAL.search(c) for c in cats):
                    changed[name] = col.cat.rename_categories(
                        [neutralise(c) if isinstance(c, str) else c for c in cats])
        elif col.dtype == object:
            if col.map(lambda v: isinstance(v, str) and _SPECIAL.search(v) is not None).any():
                changed[name] = col.map(lambda v: neutralise(v) if isinstance(v, str) else v)
        elif pd.api.types.is_string_dtype(col.dtype):  # Arrow-backed: one vectorised scan
            if col.str.contains(_SPECIAL.pattern, regex=True, na=False).any():
                changed[name] = col.str.translate(_NEUTRALISE)
    if not changed:
        return frame
    out = frame.copy(deep=False)
    for name, col in changed.items():
        out[name] = col
    return out


def seal(html: str) -> str:
    """Placeholders -> character references: data shows as text and never parses as markup.

    In a JSON data block the reference is plain text for the script that reads it; that
    script inserts table cells as HTML (where it shows as the character) and decodes a
    link's references before following it.
    """
    html = _JSON_PLACEHOLDER.sub(lambda m: _JSON_SEAL[m.group(1)], html)
    return html.translate(_SEAL)


def page_key(path: str) -> str:
    """The lake key of a requested page path: a link may carry the batch id's real characters."""
    return docs_page(neutralise(path))


def page_url(data_docs_url: str, docs_key: str) -> str:
    """The Airflow-served URL of a Data Docs page, percent-encoded so that any batch id or
    file name (``a#b``, ``with space``, ``?``, markup) opens the right page."""
    page = restore(docs_path(docs_key))
    return f"{data_docs_url.rstrip('/')}/{quote(page, safe='/')}"


# --- serving: local assets instead of public CDNs -----------------------------------------

# Every URL GX 1.24's templates load, and the file of the pinned npm package (see
# plugins/mlcore_ui_assets/package.json) that replaces it.
CDN_ASSETS = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css":
        "bootstrap/dist/css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js":
        "bootstrap/dist/js/bootstrap.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css":
        "bootstrap-table/dist/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js":
        "bootstrap-table/dist/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.js":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
    # GX loads the filter-control CSS of 1.19.0 next to the 1.19.1 table; one version here.
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.css":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/"
    "bootstrap-table-filter-control.min.css":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/dist/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js":
        "popper.js/dist/umd/popper.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css":
        "@fortawesome/fontawesome-free/css/all.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/"
    "bootstrap-datepicker.min.css":
        "bootstrap-datepicker/dist/css/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/"
    "bootstrap-datepicker.min.js":
        "bootstrap-datepicker/dist/js/bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/"
    "bootstrap-prefers-dark.css":
        "@forevolve/bootstrap-dark/dist/css/bootstrap-prefers-dark.css",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega/build/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite/build/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed/build/vega-embed.min.js",
}
# The npm packages the plugin serves (the dependencies of package.json), plus our own script.
SERVED_PACKAGES = frozenset(
    {"bootstrap", "bootstrap-table", "jquery", "popper.js", "@fortawesome/fontawesome-free",
     "bootstrap-datepicker", "@forevolve/bootstrap-dark", "vega", "vega-lite", "vega-embed"})
GX_LOGO = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png"

_URL_ATTR = re.compile(r"""(\s(?:src|href)=)(["'])(https?://[^"']*)\2""", re.IGNORECASE)
_SRI_ATTR = re.compile(r"""\s(?:integrity|crossorigin)=(["'])[^"']*\1""", re.IGNORECASE)
_ASSET_ATTR = re.compile(r"""(\s(?:src|href)=)(["'])mlcore-assets:""")


def page_depth(path: str) -> int:
    """How many folders deep a page lies below the Data Docs root (``index.html``: 0)."""
    return path.count("/")


def localise(html: str, depth: int) -> str:
    """Point every asset a page loads at the plugin's pinned copies, relative to the page.

    Known CDN URLs map to their local file; the GX logo to the copy GX puts in
    ``static/images/``; any other ``http(s)`` ``src``/``href`` that would load something
    (script, stylesheet, image) is dropped, so a changed GX template cannot make the
    browser leave the Airflow origin (the CSP would refuse it anyway). Plain links
    (``<a href>``) to the outside stay: following one is the reader's choice.
    """
    up = "../" * depth

    def swap(match: re.Match) -> str:
        attr, quote_char, url = match.groups()
        base = url.split("?", 1)[0]
        if base in CDN_ASSETS:
            return f"{attr}{quote_char}{up}{ASSETS_ROUTE}/{CDN_ASSETS[base]}{quote_char}"
        if base == GX_LOGO:
            return f"{attr}{quote_char}{up}static/images/logo-long.png{quote_char}"
        tag_start = html.rfind("<", 0, match.start())
        if html[tag_start:tag_start + 2].lower() == "<a":
            return match.group(0)
        return f"{attr}{quote_char}about:blank{quote_char}"

    html = _URL_ATTR.sub(swap, html)
    html = _SRI_ATTR.sub("", html)  # same-origin copies: no CORS, and the CSP pins their path
    return _ASSET_ATTR.sub(lambda m: f"{m.group(1)}{m.group(2)}{up}{ASSETS_ROUTE}/", html)


def content_security_policy(assets_url: str) -> str:
    """The policy every Data Docs response carries.

    Scripts only from the plugin's asset route (``assets_url``, absolute, ending in ``/``):
    no inline script, no event-handler attribute, no ``javascript:`` URL, no ``eval``;
    GX's inline scripts are replaced by data blocks our static script reads
    (:mod:`mlcore.data_docs_views`). Styles and images from this origin (GX's pages carry
    inline ``<style>`` blocks and ``style`` attributes, which cannot run code).
    """
    return "; ".join([
        "default-src 'none'",
        f"script-src {assets_url}",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'self'",
        "object-src 'none'",
    ])
