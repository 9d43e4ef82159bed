"""The S3 end-to-end suite again with the lake on SeaweedFS, a real S3 server (it enforces the
conditional writes the Delta commits rely on) instead of moto: every test and fixture of
``test_e2e_s3`` runs here unchanged; only the server differs."""

from __future__ import annotations

import pytest

from tests.fixtures_servers import seaweedfs_server
from tests.integration.test_e2e_s3 import *  # noqa: F403  (the same tests, collected here)
from tests.integration.test_e2e_s3 import CANARY_KEY_ID, CANARY_SECRET


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """SeaweedFS for this module, accepting the canary keys the Connection signs with (moto
    accepts any keys; a real server checks them)."""
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs-e2e"),
                          extra_keys=(CANARY_KEY_ID, CANARY_SECRET)) as server:
        yield server
