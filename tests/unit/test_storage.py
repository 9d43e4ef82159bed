import pytest

from mlcore.storage import LocalLake, UnsafeKey, check_key


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", "a\\b", "a//b", "", "a/\x00"])
def test_unsafe_keys_never_become_paths(key, tmp_path):
    with pytest.raises(UnsafeKey):
        LocalLake(tmp_path).read_bytes(key)


def test_clean_key_passes():
    assert check_key("landing/b1/img 1.png") == "landing/b1/img 1.png"


def test_write_is_atomic_and_lists_only_finished_objects(tmp_path):
    lake = LocalLake(tmp_path)
    lake.write_bytes("curated/a.parquet", b"x")
    (tmp_path / "curated" / ".tmp-half").write_bytes(b"partial")
    assert lake.list("curated") == ["curated/a.parquet"]


def test_write_if_absent_refuses_second_writer(tmp_path):
    lake = LocalLake(tmp_path)
    assert lake.write_if_absent("_state/lock", b"one") is True
    assert lake.write_if_absent("_state/lock", b"two") is False
    # The same bytes again (a retried task whose first try did land) is success.
    assert lake.write_if_absent("_state/lock", b"one") is True
    assert lake.read_bytes("_state/lock") == b"one"


def test_landing_objects_are_never_overwritten_or_deleted(tmp_path):
    lake = LocalLake(tmp_path)
    lake.write_bytes("landing/b1/x.png", b"upload")
    with pytest.raises(PermissionError):
        lake.write_bytes("landing/b1/x.png", b"changed")
    with pytest.raises(PermissionError):
        lake.delete("landing/b1/x.png")
    assert lake.read_bytes("landing/b1/x.png") == b"upload"
