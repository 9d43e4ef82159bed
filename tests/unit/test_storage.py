import pytest

from mlcore.storage import TMP_DIR, LocalLake, UnsafeKey, check_key
from tests.lake_contract import assert_landing_is_never_overwritten_or_deleted


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", "a\\b", "a//b", "", "a/\x00"])
def test_unsafe_keys_never_become_paths(key, tmp_path):
    with pytest.raises(UnsafeKey):
        LocalLake(tmp_path).read_bytes(key)


def test_clean_key_passes():
    assert check_key("landing/b1/img 1.png") == "landing/b1/img 1.png"


def test_write_is_atomic_and_lists_only_finished_objects(tmp_path):
    lake = LocalLake(tmp_path)
    lake.write_bytes("curated/a.parquet", b"x")
    (tmp_path / TMP_DIR / "w-half").write_bytes(b"partial")  # what a killed write leaves
    assert lake.list("curated") == ["curated/a.parquet"]
    assert lake.list("") == ["curated/a.parquet"]
    with pytest.raises(UnsafeKey):
        lake.read_bytes(f"{TMP_DIR}/w-half")


def test_user_objects_named_like_temp_files_are_listed(tmp_path):
    """The lake's temp files never share a folder with user data, so no user name is hidden."""
    lake = LocalLake(tmp_path)
    lake.write_bytes("landing/b/.tmp-hidden.png", b"user data")
    assert lake.list("landing/b") == ["landing/b/.tmp-hidden.png"]
    assert not [p for p in (tmp_path / "landing").rglob("*") if p.name.startswith("w-")]


def test_list_info_gives_sizes_from_metadata_and_flags_symlinks(tmp_path):
    lake = LocalLake(tmp_path / "lake")
    lake.write_bytes("landing/b/a.png", b"12345")
    (tmp_path / "secret").write_bytes(b"outside")
    (tmp_path / "lake/landing/b/link.png").symlink_to(tmp_path / "secret")
    (tmp_path / "lake/landing/b/dir-link").symlink_to(tmp_path)
    infos = {i.key: i for i in lake.list_info("landing/b")}
    assert infos["landing/b/a.png"].size == 5 and infos["landing/b/a.png"].unsafe is None
    assert infos["landing/b/link.png"].unsafe == "symlink"
    assert infos["landing/b/dir-link"].unsafe == "symlink"
    assert lake.list("landing/b") == ["landing/b/a.png"]  # list() gives readable objects only
    assert b"".join(lake.read_chunks("landing/b/a.png", chunk=2)) == b"12345"


def test_write_if_absent_refuses_second_writer(tmp_path):
    lake = LocalLake(tmp_path)
    assert lake.write_if_absent("_state/lock", b"one") is True
    assert lake.write_if_absent("_state/lock", b"two") is False
    # The same bytes again (a retried task whose first try did land) is success.
    assert lake.write_if_absent("_state/lock", b"one") is True
    assert lake.read_bytes("_state/lock") == b"one"


def test_landing_objects_are_never_overwritten_or_deleted(tmp_path):
    assert_landing_is_never_overwritten_or_deleted(LocalLake(tmp_path))


def test_listing_skips_a_file_renamed_while_it_lists(tmp_path, monkeypatch):
    """A table writer renames its temp log file while a reader lists the folder: the
    listing reports what still exists instead of failing (seen in the kill matrix)."""
    import os

    lake = LocalLake(tmp_path / "lake")
    lake.write_bytes("predictions/_delta_log/00000000000000000001.json", b"{}")
    temp = tmp_path / "lake/predictions/_delta_log/00000000000000000002.json#1"
    temp.write_bytes(b"{}")
    real_lstat = os.lstat

    def lstat_after_rename(path, *args, **kwargs):
        if str(path) == str(temp) and temp.exists():
            temp.rename(str(temp).removesuffix("#1"))  # the writer wins the race
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat_after_rename)
    assert lake.list("predictions/_delta_log") == [
        "predictions/_delta_log/00000000000000000001.json"]
