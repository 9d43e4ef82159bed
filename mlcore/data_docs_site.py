"""The Data Docs site built incrementally: a validation after a year costs what the first did.

GX's ``SiteBuilder`` rebuilds the index on every validation from the stores: it lists every
stored result and every page (one LIST per 1,000 objects), reads up to
``validation_results_limit`` results (one GET each), and deletes the expectation pages of
every suite the ephemeral context does not hold (so the index only ever linked the last
suite run). :class:`LakeSiteBuilder` keeps GX's renderers and our views but

* renders only the pages it is given (the new validation and its suite),
* copies GX's static assets once per GX version, not on every validation, and
* builds the index from a small state in the lake (:data:`mlcore.layout.DOCS_INDEX`): the
  newest ``DOCS_INDEX_RECENT`` rows and the suites seen. The state is a chain of
  generations written create-if-absent, so two validations at once both land (the loser
  re-reads and retries), and only the newest generation is kept.

A lake without the state (written before it) gets it seeded once from the stored results,
which is the one-time cost GX paid on every validation; ``mlcore ingest rebuild-index``
does the same on demand (:meth:`LakeSiteBuilder.reindex`). Called with no resources (``build_data_docs()``),
the site is rebuilt GX's way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import great_expectations as gx
from great_expectations.core import ExpectationSuite
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.store.html_site_store import SiteSectionIdentifier
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)
from great_expectations.render.renderer.site_builder import SiteBuilder

from mlcore.layout import (
    DATA_DOCS,
    DOCS_INDEX,
    docs_index_generation,
    docs_index_generation_number,
)
from mlcore.storage import Lake

log = logging.getLogger(__name__)

# Generations kept: the newest only. A reader that lists one just replaced retries; one is
# also the only count at which the first validations of a lake cost what later ones do.
KEEP_GENERATIONS = 1
_MAX_ATTEMPTS = 50  # concurrent validations each win a generation within a few rounds


@dataclass(frozen=True)
class IndexRow:
    """One validation as the index lists it (strings as GX stored them: neutralised)."""

    suite: str
    run_name: str
    run_time: str  # ISO 8601, as GX's run identifier carries it
    batch_identifier: str
    success: bool
    asset_name: str | None
    batch_spec: dict

    @property
    def key(self) -> tuple:
        return (self.suite, self.run_name, self.run_time, self.batch_identifier)


@dataclass
class IndexState:
    rows: list[IndexRow]  # newest first, at most ``limit``
    suites: list[str]

    def with_rows(self, new: Iterable[IndexRow], suites: Iterable[str], limit: int) -> IndexState:
        merged = {r.key: r for r in self.rows}
        merged.update({r.key: r for r in new})
        rows = sorted(merged.values(), key=lambda r: (r.run_time, r.key), reverse=True)
        return IndexState(rows[:limit], sorted({*self.suites, *suites}))

    def holds(self, rows: Iterable[IndexRow], suites: Iterable[str]) -> bool:
        have = {r.key: r for r in self.rows}
        return set(suites) <= set(self.suites) and all(have.get(r.key) == r for r in rows)

    def to_json(self) -> bytes:
        return json.dumps({"rows": [asdict(r) for r in self.rows], "suites": self.suites},
                          sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> IndexState:
        doc = json.loads(data)
        return cls([IndexRow(**r) for r in doc["rows"]], list(doc["suites"]))


def _row(key: ValidationResultIdentifier, result) -> IndexRow:
    meta = result.meta or {}
    asset = (meta.get("batch_kwargs") or {}).get("data_asset_name") \
        or (meta.get("batch_spec") or {}).get("data_asset_name") or result.asset_name
    return IndexRow(
        suite=key.expectation_suite_identifier.name,
        run_name=key.run_id.run_name,
        run_time=key.run_id.run_time.isoformat(),
        batch_identifier=key.batch_identifier,
        success=bool(result.success),
        asset_name=asset,
        batch_spec=json.loads(json.dumps(meta.get("batch_spec") or {}, default=str)),
    )


class LakeSiteBuilder(SiteBuilder):
    """GX's site builder, with the per-validation work independent of the site's history."""

    # No __init__ of our own: GX passes constructor arguments by SiteBuilder's signature.
    @property
    def lake(self) -> Lake:
        return self.target_store.store_backends[ValidationResultIdentifier].lake

    def build(self, resource_identifiers=None, build_index: bool = True):
        if not resource_identifiers:
            return super().build(resource_identifiers, build_index=build_index)
        rows, suites = [], []
        for key in resource_identifiers:
            if isinstance(key, ValidationResultIdentifier):
                result = self._render("validations", key)
                rows.append(_row(key, result))
            elif isinstance(key, ExpectationSuiteIdentifier):
                self._render("expectations", key)
                suites.append(key.name)
        self._copy_static_assets_once()
        if build_index:
            self._add(rows, suites)
        return self.get_resource_url(only_if_exists=False), None

    def _render(self, section_name: str, key):
        section = self.site_section_builders[section_name]
        resource = section.source_store.get(key)
        if isinstance(key, ExpectationSuiteIdentifier):
            resource = ExpectationSuite(**resource)
        html = section.view_class.render(section.renderer_class.render(resource),
                                         data_context_id=section.data_context_id,
                                         show_how_to_buttons=section.show_how_to_buttons)
        self.target_store.set(SiteSectionIdentifier(site_section_name=section_name,
                                                    resource_identifier=key), html)
        return resource

    def _copy_static_assets_once(self) -> None:
        marker = f"{DATA_DOCS}/static/.copied-gx-{gx.__version__}"
        if not self.lake.exists(marker):
            self.target_store.copy_static_assets()
            self.lake.write_bytes(marker, b"")

    # --- the index ---------------------------------------------------------------------------
    @property
    def _limit(self) -> int:
        return self.site_index_builder.validation_results_limit

    def _generations(self) -> list[int]:
        return sorted(docs_index_generation_number(k) for k in self.lake.list(DOCS_INDEX)
                      if k.endswith(".json"))

    def _newest(self) -> tuple[list[int], IndexState | None]:
        """The generations there are, and the newest one's state (None: no state yet)."""
        for _ in range(_MAX_ATTEMPTS):
            gens = self._generations()
            if not gens:
                return [], None
            try:
                return gens, IndexState.from_json(
                    self.lake.read_bytes(docs_index_generation(gens[-1])))
            except FileNotFoundError:  # replaced by a newer writer between list and read
                continue
        raise RuntimeError(f"Data Docs index under {DOCS_INDEX} kept moving; retry the task")

    def _publish(self, gens: list[int], state: IndexState) -> int | None:
        """Write ``state`` as the generation after ``gens``; its number, or None if another
        writer took that number first."""
        new = (gens[-1] if gens else 0) + 1
        if not self.lake.write_if_absent(docs_index_generation(new), state.to_json()):
            return None
        if any(g > new for g in self._generations()):
            # Our number had been used and pruned already (we listed long ago): this
            # generation is not the newest, so it would be lost. Withdraw it and retry.
            self.lake.delete(docs_index_generation(new))
            return None
        for old in gens:
            if old <= new - KEEP_GENERATIONS:
                self.lake.delete(docs_index_generation(old))
        return new

    def reindex(self) -> int:
        """Rebuild the index state from the stored results (``rebuild-index``); its row count."""
        def reseeded(current: IndexState | None) -> IndexState:
            state = self._seed()
            state.suites = sorted({*state.suites, *(current.suites if current else [])})
            return state

        return len(self._update(reseeded).rows)

    def _seed(self) -> IndexState:
        """The state a lake without one would have had: its newest stored results."""
        store = self.data_context.validation_results_store
        keys = sorted((k for k in store.list_keys() if isinstance(k, ValidationResultIdentifier)),
                      key=lambda k: k.run_id.run_time, reverse=True)[: self._limit]
        log.info("Data Docs index: seeding from %d stored results (once)", len(keys))
        return IndexState([], []).with_rows((_row(k, store.get(k)) for k in keys), [],
                                            self._limit)

    def _add(self, rows: list[IndexRow], suites: list[str]) -> None:
        """Add the rows and suites to the index state, then write the index page."""
        def added(current: IndexState | None) -> IndexState:
            if current is not None and current.holds(rows, suites):
                return current  # a retried task: already indexed
            return (current or self._seed()).with_rows(rows, suites, self._limit)

        self._update(added)

    def _update(self, change) -> IndexState:
        """Publish ``change(newest state or None)`` as the next generation (unless it returns
        the newest unchanged), retrying from the newest when another writer took the number
        first; then write the index page. The state published."""
        for _ in range(_MAX_ATTEMPTS):
            gens, current = self._newest()
            state = change(current)
            if state is current:
                self._write_index(gens[-1], state)
                return state
            if (gen := self._publish(gens, state)) is not None:
                self._write_index(gen, state)
                return state
        raise RuntimeError(f"Data Docs index under {DOCS_INDEX}: no generation won; retry")

    def _write_index(self, gen: int, state: IndexState) -> None:
        while True:  # the last writer of index.html has seen the newest generation
            self.target_store.write_index_page(self._index_page(state))
            gens, newest = self._newest()
            if not gens or gens[-1] <= gen:
                return
            gen, state = gens[-1], newest

    def _index_page(self, state: IndexState) -> str:
        builder = self.site_index_builder
        links: dict = {"site_name": builder.site_name}
        for suite in state.suites:
            builder.add_resource_info_to_index_links_dict(
                index_links_dict=links, expectation_suite_name=suite, section_name="expectations")
        for r in state.rows:
            run_id = RunIdentifier(run_name=r.run_name, run_time=r.run_time)
            builder.add_resource_info_to_index_links_dict(
                index_links_dict=links, expectation_suite_name=r.suite, section_name="validations",
                batch_identifier=r.batch_identifier, run_id=run_id,
                validation_success=r.success, run_time=run_id.run_time, run_name=r.run_name,
                asset_name=r.asset_name, batch_spec=r.batch_spec)
        return builder.view_class.render(builder.renderer_class.render(links),
                                         data_context_id=builder.data_context_id,
                                         show_how_to_buttons=builder.show_how_to_buttons)


SITE_BUILDER = {"module_name": __name__, "class_name": LakeSiteBuilder.__name__}
