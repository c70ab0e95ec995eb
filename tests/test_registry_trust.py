"""The server trusts only registry entries that this user wrote, in a private directory."""

import json
import os
import stat

import pytest

from scalable.jupyter import registry


def entry(cluster_id):
    return {
        "id": cluster_id,
        "scheduler_address": "tcp://127.0.0.1:1",
        "pid": os.getpid(),
        "host": "elsewhere",
    }


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make files of another user")
def test_entries_of_other_users_and_shared_directories_are_ignored(tmp_path):
    d = tmp_path / "reg"
    d.mkdir(mode=0o700)
    for cid in ("mine", "theirs"):
        (d / f"{cid}.json").write_text(json.dumps(entry(cid)))
    os.chown(d / "theirs.json", 65534, 65534)
    assert [e["id"] for e in registry.list_clusters(prune=False, directory=d)] == ["mine"]
    os.chmod(d, 0o777)  # anyone could plant an entry here
    assert registry.list_clusters(prune=False, directory=d) == []


# -- the rule, unit by unit: no root, no service ---------------------------------------------------


@pytest.fixture
def reg(tmp_path):
    d = tmp_path / "reg"
    d.mkdir(mode=0o700)
    return d


def write(d, name, content):
    (d / name).write_text(json.dumps(content) if not isinstance(content, str) else content)


def test_a_symlink_is_never_followed_even_one_of_this_user(reg, tmp_path):
    # the link and its target both belong to this user; the target even names the right id
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    write(elsewhere, "linked.json", entry("linked"))
    (reg / "linked.json").symlink_to(elsewhere / "linked.json")
    write(reg, "plain.json", entry("plain"))
    assert [e["id"] for e in registry.list_clusters(prune=False, directory=reg)] == ["plain"]
    assert registry.read_entry("linked", reg) is None
    assert registry.read_entry("plain", reg)["id"] == "plain"
    registry.list_clusters(prune=True, directory=reg)
    assert (reg / "linked.json").is_symlink()  # a refused file is not ours to delete


def test_every_reader_applies_the_same_rule(reg):
    write(reg, "other.json", entry("someone"))  # name and id disagree
    assert registry.read_entry("other", reg) is None
    assert registry.list_clusters(prune=False, directory=reg) == []
    write(reg, "ok.json", entry("ok"))
    os.chmod(reg, 0o770)  # the group could plant or swap entries
    assert registry.read_entry("ok", reg) is None
    assert registry.list_clusters(prune=False, directory=reg) == []
    os.chmod(reg, 0o700)
    assert registry.read_entry("ok", reg)["id"] == "ok"


def test_deep_or_huge_entries_are_refused_not_raised(reg):
    write(reg, "deep.json", "[" * 100_000 + "]" * 100_000)
    write(reg, "big.json", json.dumps({**entry("big"), "pad": "x" * (2 << 20)}))
    assert registry.read_entry("deep", reg) is None
    assert registry.read_entry("big", reg) is None
    assert registry.list_clusters(prune=False, directory=reg) == []


def test_a_registry_id_with_a_trailing_newline_is_refused(reg):
    with pytest.raises(ValueError, match="not valid"):
        registry.check_id("abc\n")
    assert registry.read_entry("abc\n", reg) is None


def test_entries_are_written_0600_through_no_link(monkeypatch, reg, tmp_path):
    monkeypatch.setenv("SCALABLE_REGISTRY_DIR", str(reg))
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (reg / "c1.json").symlink_to(victim)  # planted where the entry goes
    path = registry.register(entry("c1"))
    assert victim.read_text() == "keep" and not path.is_symlink()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert registry.read_entry("c1", reg)["id"] == "c1"


def test_an_existing_shared_registry_directory_is_refused_not_chmodded(monkeypatch, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    monkeypatch.setenv("SCALABLE_REGISTRY_DIR", str(shared))
    with pytest.raises(ValueError, match="writable by group or others"):
        registry.register(entry("c1"))
    assert stat.S_IMODE(shared.stat().st_mode) == 0o777 and not list(shared.iterdir())


# -- as another user of the machine ----------------------------------------------------------------


@pytest.mark.root
def test_files_of_another_user_are_never_read(other_user):
    tmp_path = other_user.base
    reg = tmp_path / "reg"
    reg.mkdir(mode=0o700)
    # the directory was once shared: the other user left an entry in it, named and shaped right
    os.chmod(reg, 0o1777)
    other_user.sh(f"printf '%s' '{json.dumps(entry('theirs'))}' > {reg}/theirs.json")
    os.chmod(reg, 0o700)
    # and a link of ours points at a file they control
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, other_user.uid, other_user.gid)
    other_user.sh(f"printf '%s' '{json.dumps(entry('lured'))}' > {theirs}/lured.json")
    (reg / "lured.json").symlink_to(theirs / "lured.json")
    write(reg, "mine.json", entry("mine"))
    assert os.stat(reg / "theirs.json").st_uid == other_user.uid
    assert [e["id"] for e in registry.list_clusters(prune=False, directory=reg)] == ["mine"]
    registry.list_clusters(prune=True, directory=reg)
    assert registry.read_entry("theirs", reg) is None
    assert registry.read_entry("lured", reg) is None
    assert (reg / "theirs.json").exists() and (reg / "lured.json").is_symlink()  # left alone
