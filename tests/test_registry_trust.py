"""The server trusts only registry entries that this user wrote, in a private directory."""

import json
import os

import pytest

from scalable.jupyter import registry


def entry(cluster_id):
    return {"id": cluster_id, "scheduler_address": "tcp://127.0.0.1:1", "pid": os.getpid(),
            "host": "elsewhere"}


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
