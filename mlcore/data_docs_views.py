"""GX page views whose pages run no inline script: what lets the plugin's CSP forbid it.

GX's templates put script inline: table data and options inside ``<script>`` blocks,
helper functions, ``onclick`` attributes. A strict policy cannot allow inline script
from data (hashing each block at serve time would allow an injected one too), so these
views render GX's pages with a few templates replaced (ours are looked up first):
data goes into ``<script type="application/json">`` blocks (``tojson`` escapes ``<``,
``>``, ``&`` and ``'``; a non-script type never executes), and one static file,
``datadocs.js`` served from the plugin's asset route, reads them and does what GX's
inline code did. Everything else GX renders is unchanged.
"""

from __future__ import annotations

from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
from jinja2 import BytecodeCache, ChoiceLoader, DictLoader

from mlcore.data_docs import ASSET_SCHEME

TEMPLATES = {
    # The CDN URLs stay as GX writes them (the plugin maps them to local copies when it
    # serves a page). Our script is deferred: it runs once the page is parsed, before
    # bootstrap-table's own on-ready pass, as GX's inline scripts did.
    "js_script_imports.j2": """
<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>
<script src="https://cdn.jsdelivr.net/npm/vega-lite@5"></script>
<script src="https://cdn.jsdelivr.net/npm/vega-embed@6"></script>
<link rel="stylesheet" href="https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css">
<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>
<script src="https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js"></script>
<script src="https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js"></script>
<script src="https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js"></script>
<script src="https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js"></script>
<script src="https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js"></script>
<script defer src="mlcore-assets:mlcore/datadocs.js"></script>
""",
    # Helper functions now live in datadocs.js.
    "bootstrap_table_js_functions.j2": "",
    "bootstrap_table.j2": """{% include 'content_block_header.j2' %}
{% if "styling" in content_block and "body" in content_block["styling"] -%}
    {% set content_block_body_styling = content_block["styling"]["body"] | render_styling -%}
{% else -%}
    {% set content_block_body_styling = "" -%}
{% endif -%}
{% set table_options = content_block.get("table_options", {}) %}
{% set table_id = content_block_id ~ "-body-table" %}
{% set table_toolbar_id = table_id ~ "-toolbar" %}
{% set table_columns = content_block["table_columns"] %}
{%- if "title_row" in content_block -%}
  {%- set title_row -%}
    <tr><th class="text-center p-2" colspan="{{ table_columns | length }}">{{ content_block["title_row"] | render_content_block }}</th></tr>
  {%- endset %}
{% else %}
  {% set title_row = "" %}
{% endif %}
<div id="{{ table_toolbar_id }}" class="ml-1">
  {% if table_options.get('filterControl') == "true" or table_options.get('search') == "true" %}
    <button class="btn btn-sm btn-secondary ml-1" data-mlcore-clear-filters="{{ table_id }}">Clear Filters</button>
  {% endif %}
</div>
<table
  id="{{ table_id }}"
  {{ content_block_body_styling | replace("{{section_id}}", section_id) | replace("{{content_block_id}}", content_block_id) }}
  data-toggle="table"
>
</table>
<script type="application/json" class="mlcore-bootstrap-table">{{ {
  "table": "#" ~ table_id,
  "toolbar": "#" ~ table_toolbar_id,
  "columns": table_columns,
  "data": content_block["table_data"] | render_bootstrap_table_data,
  "options": table_options,
  "title_row": title_row | trim,
  "row_links": table_options.get("rowAttributes") == "rowAttributesLinks",
} | tojson }}</script>
""",
    "graph.j2": """{% include 'content_block_header.j2' %}
{%- if index -%}{%- set child_id = "-child-" ~ index -%}{%- else -%}{%- set child_id = "" -%}{%- endif -%}
<div class="show-scrollbars">
  <div id="{{content_block_id}}-graph{{child_id}}" {{content_block_body_styling | replace("{{section_id}}", section_id) | replace("{{content_block_id}}", content_block_id)}}></div>
</div>
<script type="application/json" class="mlcore-graph" data-target="#{{content_block_id}}-graph{{child_id}}">{{ content_block["graph"] | tojson }}</script>
""",
    "page_action_card.j2": """<div class="card mb-3">
  <div class="card-header p-2">
    <strong>Actions</strong>
  </div>
  <div class="card-body p-3">
    {% if renderer_type in ["ValidationResultsPageRenderer"] %}
      <div class="mb-2">
        <p class="card-text col-12 p-0 mb-1">
          Validation Filter:
        </p>
        <div class="d-flex justify-content-center">
          <div class="btn-group btn-group-toggle" data-toggle="buttons">
            <label class="btn btn-primary active" data-mlcore-validation-filter="all">
              <input type="radio" name="options" id="option1" autocomplete="off" checked> Show All
            </label>
            <label class="btn btn-primary" data-mlcore-validation-filter="failed">
              <input type="radio" name="options" id="option2" autocomplete="off"> Failed Only
            </label>
          </div>
        </div>
      </div>
    {% endif %}
  </div>
</div>
""",
    # A marketing footer with inline script; the Airflow deployment has no use for it.
    "cta_footer.j2": "",
}


assert ASSET_SCHEME in TEMPLATES["js_script_imports.j2"]  # the plugin rewrites this scheme


class _CompiledTemplates(BytecodeCache):
    """Compiled templates shared by every view in the process.

    GX builds a new jinja environment for each view, and every validation builds new views,
    so each page used to compile GX's ~60 templates again (most of a night's Data Docs
    time). Jinja checks each entry against its template's source checksum.
    """

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket) -> None:
        if bucket.key in self._code:
            bucket.bytecode_from_string(self._code[bucket.key])

    def dump_bytecode(self, bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


_COMPILED = _CompiledTemplates()


class _OurTemplatesFirst:
    env: object

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.env.loader = ChoiceLoader([DictLoader(TEMPLATES), self.env.loader])
        self.env.bytecode_cache = _COMPILED


class SafePageView(_OurTemplatesFirst, DefaultJinjaPageView):
    """Validation result and expectation suite pages without inline script."""


class SafeIndexPageView(_OurTemplatesFirst, DefaultJinjaIndexPageView):
    """The Data Docs index without inline script."""


VIEW = {"module_name": __name__, "class_name": "SafePageView"}
INDEX_VIEW = {"module_name": __name__, "class_name": "SafeIndexPageView"}
