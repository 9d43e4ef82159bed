"""docs/configuration.md documents every setting, with its environment variable."""

import re

from mlcore.settings import REPO_ROOT, Settings


def test_every_setting_is_documented_and_nothing_else():
    text = (REPO_ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `(MLCORE_[A-Z0-9_]+)` \|", text, re.M))
    expected = {f"MLCORE_{name.upper()}" for name in Settings.model_fields}
    assert documented == expected


def test_environment_overrides_defaults(monkeypatch):
    monkeypatch.setenv("MLCORE_TRAIN_EPOCHS", "3")
    monkeypatch.setenv("MLCORE_LAKE_URI", "s3://bucket/lake")
    s = Settings()
    assert s.train_epochs == 3 and s.resolved_lake_uri == "s3://bucket/lake"


def test_secrets_do_not_show_in_repr():
    s = Settings(s3_secret_access_key="canary-secret-123")
    assert "canary-secret-123" not in repr(s) and "canary-secret-123" not in str(s.model_dump())
