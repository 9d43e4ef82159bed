"""Data Docs built by real GX from hostile names hold no markup from data and no inline script."""

import re
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest

from mlcore.data_docs import localise, neutralise, page_url, restore, seal
from mlcore.images import encode_png
from mlcore.ingest import BatchRejected, ingest_batch
from mlcore.validation import ValidationFailed, run_suite
from tests.conftest import DAY

PAYLOAD = "<img src=x onerror=window.__pwned=1>"
HOSTILE_FILES = [f"{PAYLOAD}.png", "q\"'`<b>bold</b>.png", "javascript:alert(1).png",
                 "</script><script>window.__pwned=2</script>.png", "a&amp;b #?%.png",
                 "L" * 200 + ".png"]


def _img(seed: int) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 150, (28, 28), dtype=np.uint8))


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text of inline scripts."""

    def __init__(self):
        super().__init__()
        self.tags, self.scripts, self._in_script = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = dict(attrs) if tag == "script" else None

    def handle_data(self, data):
        if self._in_script is not None:
            self.scripts.append((self._in_script, data))

    def handle_endtag(self, tag):
        self._in_script = None


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from mlcore.settings import Settings
    from mlcore.storage import LocalLake

    home = tmp_path_factory.mktemp("docs")
    settings, lake = Settings(home=home / "home"), LocalLake(home / "lake")
    batches = {
        "good-01": {**{n: f"not an image {i}".encode() for i, n in enumerate(HOSTILE_FILES)},
                    **{f"{i}.png": _img(i) for i in range(12)}},
        f"b{PAYLOAD}": {"x.png": b"junk", "y.png": b"junk2", "z.png": _img(99)},
    }
    errors = {}
    for batch_id, files in batches.items():
        for name, data in files.items():
            lake.write_bytes(f"landing/{batch_id}/{name}", data)
        lake.write_bytes(f"landing/{batch_id}/labels.csv",
                         f'filename,label\n0.png,"{PAYLOAD}"\n1.png,Bag\n'.encode())
        lake.write_bytes(f"landing/{batch_id}/_READY", b"")
        try:
            ingest_batch(settings, lake, batch_id, logical_date=DAY)
        except (ValidationFailed, BatchRejected) as exc:
            errors[batch_id] = exc
    # Ingestion refuses the hostile batch id before GX sees it; defence in depth: the pages
    # must stay safe for any batch id that reaches GX, so validate one directly.
    hostile = f"b{PAYLOAD}"
    assert errors[hostile].reason == "invalid_batch_id"
    summary = pd.DataFrame([{"key": hostile, "n_files": 3, "reject_rate": 1.0,
                             "max_label_share": 1.0, "accepted_mean_intensity": 0.0}])
    outcome = run_suite(lake, settings.gx_suites_dir, "batch_summary", frame=summary,
                        run_name=hostile, run_time=DAY, parameters={
        "max_batch_files": 10, "max_reject_rate": 0.5, "max_label_share": 0.5,
        "intensity_mean_min": 1.0, "intensity_mean_max": 2.0})
    assert not outcome.success
    errors[hostile] = ValidationFailed.for_page(f"batch {hostile}", outcome.failed_expectations,
                                                outcome.docs_key, lake=lake,
                                                data_docs_url=settings.data_docs_url)
    pages = {k: lake.read_bytes(k).decode() for k in lake.list("validation/data_docs")
             if k.endswith(".html")}
    return lake, settings, pages, errors


def test_names_reach_gx_only_neutralised_and_failures_map_back(built):
    lake, _, pages, errors = built
    assert len(pages) >= 5  # index, 4 validation pages, suite pages
    for key, html in pages.items():
        for raw in (PAYLOAD, "<b>bold</b>", "</script><script>", "q\"'`"):
            assert raw not in html, (key, raw)
    from mlcore.ingest import BatchReport, ledger_key

    report = BatchReport.from_json(lake.read_bytes(ledger_key("good-01")))
    # Every hostile name is quarantined under its real key; 0.png for its hostile label.
    assert {r.key.split("/", 2)[2] for r in report.rejections} == {*HOSTILE_FILES, "0.png"}
    assert isinstance(errors[f"b{PAYLOAD}"], ValidationFailed)  # its batch-level page exists


def test_built_pages_run_no_inline_script_and_no_event_handlers(built):
    for key, html in built[2].items():
        parser = _Tags()
        parser.feed(seal(html))
        for tag, attrs in parser.tags:
            assert not [a for a in attrs if a.startswith("on")], (key, tag, attrs)
            for name in ("href", "src"):
                assert not (attrs.get(name) or "").lower().startswith("javascript:"), (key, attrs)
        for attrs, _ in parser.scripts:
            assert "src" in attrs or attrs.get("type") == "application/json", (key, attrs)


def test_sealed_pages_show_the_real_names_as_character_references(built):
    pages = built[2]
    sealed = seal(next(h for k, h in pages.items() if "file_profiles/good-01" in k))
    assert "&#60;img src=x onerror=window.__pwned=1&#62;.png" in sealed
    assert "&#60;/script&#62;&#60;script&#62;" in sealed
    index = seal(pages["validation/data_docs/index.html"])
    assert "b&#60;img src=x onerror=window.__pwned=1&#62;" in index
    assert "\ue000" not in index


def test_links_are_percent_encoded_and_name_the_page(built):
    lake, settings, _, errors = built
    url = errors[f"b{PAYLOAD}"].docs_url
    assert url.startswith(settings.data_docs_url + "/validations/batch_summary/b%3Cimg%20src")
    page = unquote(urlsplit(url).path).removeprefix(urlsplit(settings.data_docs_url).path + "/")
    assert lake.exists("validation/data_docs/" + neutralise(page))
    assert page_url("http://h/data-docs", "validation/data_docs/validations/s/a#b/with space/p.html") \
        == "http://h/data-docs/validations/s/a%23b/with%20space/p.html"


def test_neutralise_is_reversible_and_localise_maps_cdn_urls():
    text = "<a href='x'>&amp;\"`</a>"
    assert restore(neutralise(text)) == text and not re.search("[<>&\"'`]", neutralise(text))
    html = ('<script src="https://code.jquery.com/jquery-3.7.1.min.js" integrity="sha384-x" '
            'crossorigin="anonymous"></script><img src="https://great-expectations-web-assets.'
            's3.us-east-2.amazonaws.com/logo-long.png?d=1">')
    assert localise(html, 2) == ('<script src="../../_assets/jquery/dist/jquery.min.js"></script>'
                                 '<img src="../../static/images/logo-long.png">')
