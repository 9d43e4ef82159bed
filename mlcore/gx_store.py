"""Great Expectations stores in the lake: validation results and Data Docs as lake objects.

GX 1.x ships only a filesystem tuple store (its S3 backend is gone), so results and Data
Docs go through the lake itself: one code path for a folder and for S3, atomic local writes
and the same key checks as everything else. GX builds a store backend from a plain config
dict (``module_name`` + ``class_name``, deep-copied), so the config names the lake by URI
and :class:`LakeStoreBackend` finds the open lake again here. Only :mod:`mlcore.validation`
imports this module; the lake itself never imports Great Expectations.
"""

from __future__ import annotations

from typing import Any

from great_expectations.data_context.store.tuple_store_backend import TupleStoreBackend
from great_expectations.exceptions import InvalidKeyError

from mlcore.storage import Lake, check_key, open_lake

# Lakes handed to Great Expectations, by URI (see the module docstring).
_LAKES: dict[str, Lake] = {}


def store_backend_config(lake: Lake, prefix: str) -> dict:
    """A GX ``store_backend`` config that keeps the store under ``prefix`` in ``lake``."""
    check_key(prefix.strip("/"))
    _LAKES[lake.uri] = lake
    return {
        "module_name": __name__,
        "class_name": LakeStoreBackend.__name__,
        "lake_uri": lake.uri,
        "base_key": prefix.strip("/"),
    }


def _lake_for(lake_uri: str) -> Lake:
    if lake_uri in _LAKES:
        return _LAKES[lake_uri]
    from mlcore.settings import get_settings  # a config built in another process
    from mlcore.task import deployed_tasks

    settings = get_settings()
    for spec in deployed_tasks(settings):  # the deployment's lake, or one task's under it
        lake = open_lake(settings.for_task(spec.name))
        if lake.uri == lake_uri:
            return lake
    raise LookupError(f"no lake {lake_uri!r} is open in this process")


class LakeStoreBackend(TupleStoreBackend):
    """A GX tuple store whose files are lake objects under ``base_key``."""

    def __init__(self, lake_uri: str, base_key: str, **kwargs: Any) -> None:
        kwargs.setdefault("platform_specific_separator", False)
        super().__init__(**kwargs)
        self.lake = _lake_for(lake_uri)
        self.base_key = check_key(base_key.strip("/"))
        if not self._suppress_store_backend_id:
            _ = self.store_backend_id
        self._config = {
            "lake_uri": lake_uri, "base_key": base_key, **kwargs,
            "module_name": __name__, "class_name": type(self).__name__,
        }

    def _lake_key(self, key: tuple) -> str:
        return f"{self.base_key}/{self._convert_key_to_filepath(key)}"

    def _get(self, key, **kwargs):
        try:
            return self.lake.read_bytes(self._lake_key(key)).decode("utf-8").rstrip("\n")
        except FileNotFoundError as exc:
            raise InvalidKeyError(f"no object {self._lake_key(key)} in {self.lake.uri}") from exc

    def _get_all(self) -> list:
        return [self._get(k) for k in self.list_keys() if k != self.STORE_BACKEND_ID_KEY]

    def _set(self, key, value, **kwargs):
        if not isinstance(key, tuple):
            key = key.to_tuple()
        data = value.encode("utf-8") if isinstance(value, str) else value
        self.lake.write_bytes(self._lake_key(key), data)
        return self.lake.url(self._lake_key(key))

    def _move(self, source_key, dest_key, **kwargs):
        src, dst = self._lake_key(source_key), self._lake_key(dest_key)
        if not self.lake.exists(src):
            return False
        self.lake.write_bytes(dst, self.lake.read_bytes(src))
        self.lake.delete(src)
        return dest_key

    def list_keys(self, prefix: tuple = ()) -> list:
        under = "/".join((self.base_key, *prefix))
        keys = []
        for lake_key in self.lake.list(under):
            filepath = lake_key[len(self.base_key) + 1 :]
            if self._is_missing_prefix_or_suffix(self.filepath_prefix, self.filepath_suffix,
                                                 filepath):
                continue
            key = self._convert_filepath_to_key(filepath)
            if key and not self.is_ignored_key(key):
                keys.append(key)
        return keys

    def remove_key(self, key):
        if not isinstance(key, tuple):
            key = key.to_tuple()
        if not self.lake.exists(self._lake_key(key)):
            return False
        self.lake.delete(self._lake_key(key))
        return True

    def _has_key(self, key) -> bool:
        return self.lake.exists(self._lake_key(key))

    def get_url_for_key(self, key, protocol=None) -> str:
        return self.lake.url(self._lake_key(key))

    def get_public_url_for_key(self, key, protocol=None) -> str:
        return f"{self.base_public_path}{self._convert_key_to_filepath(key)}"

    @property
    def config(self) -> dict:
        return self._config
