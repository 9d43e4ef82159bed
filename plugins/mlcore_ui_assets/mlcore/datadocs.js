// What GX's inline Data Docs scripts did, from one static file (the pages' CSP allows no
// inline script). Data comes from <script type="application/json"> blocks, never from code.
(function () {
  "use strict";

  // bootstrap-table resolves these option values by global name (GX's table_options).
  window.rowStyleLinks = function () { return { css: { cursor: "pointer" } }; };
  window.rowAttributesLinks = function (row) {
    return { "class": "clickable-row", "data-href": row._table_row_link_path };
  };
  window.expectationSuiteNameFilterDataCollector = function (value, row) {
    return row._expectation_suite_name_sort;
  };
  window.validationSuccessFilterDataCollector = function (value, row) {
    return row._validation_success_text;
  };
  function dateWithoutTime(d) {
    var month = String(d.getMonth() + 1).padStart(2, "0");
    var day = String(d.getDate()).padStart(2, "0");
    return [d.getFullYear(), month, day].join("-");
  }
  window.formatRuntimeDateForFilter = function (text, value) {
    return text == dateWithoutTime(new Date(value));
  };

  // Text of HTML with character references (a page link may carry an escaped batch id).
  function decodeEntities(text) {
    var doc = new DOMParser().parseFromString("<!doctype html><body>", "text/html");
    doc.body.innerHTML = text;  // an inert document: nothing in it runs or loads
    return doc.body.textContent;
  }

  function initTable(spec) {
    var $table = $(spec.table);
    $table.bootstrapTable(Object.assign(
      { columns: spec.columns, data: spec.data, toolbar: spec.toolbar }, spec.options));
    if (spec.title_row) {
      $table.children("thead").prepend(spec.title_row);
    }
    if (spec.row_links) {
      $table.on("click-row.bs.table", function (e, row, $element) {
        var target = new URL(decodeEntities(String($element.data("href"))), window.location.href);
        if (target.origin === window.location.origin) { window.location = target.href; }
      });
    }
  }

  function showValidations(show) {
    var verb = show ? "fadeIn" : "fadeOut";
    $(".hide-succeeded-validation-target-child").parent()[verb]();
    $(".hide-succeeded-validation-target")[verb]();
    $(".hide-succeeded-validations-column-section-target-child").parent().parent().each(
      function (idx, el) {
        $(el)[verb]();
        $("a").filter(function () {
          return (this.getAttribute("href") || "").endsWith(el.id);
        })[verb]();
      });
  }

  // Loaded with "defer": the document is parsed, and bootstrap-table's own on-ready pass over
  // [data-toggle=table] has not run yet, so these tables get their data and options first.
  (function init() {
    $("script.mlcore-bootstrap-table").each(function () {
      initTable(JSON.parse(this.textContent));
    });
    $("script.mlcore-graph").each(function () {
      var spec = JSON.parse(this.textContent);  // GX passes a Vega-Lite spec or its JSON text
      if (typeof spec === "string") { spec = JSON.parse(spec); }
      if (window.vegaEmbed) {
        window.vegaEmbed(this.dataset.target, spec, { actions: false }).catch(console.warn);
      }
    });
    $(document).on("click", "[data-mlcore-clear-filters]", function () {
      var $table = $("#" + this.getAttribute("data-mlcore-clear-filters"));
      $table.bootstrapTable("clearFilterControl");
      $table.bootstrapTable("resetSearch");
    });
    $(document).on("click", "[data-mlcore-validation-filter]", function () {
      showValidations(this.getAttribute("data-mlcore-validation-filter") === "all");
    });
  })();
})();
