"""@cacheable on workers of two container tags sharing the work directory's cache.

With the apptainer stand-in, on the local cluster and on the real test Slurm: every worker runs in
its tag's image with the work directory as home and current directory.
"""

import os
import pickle

import dask
import pytest

from scalable import LocalCluster, ScalableClient, SlurmCluster
from scalable.cache import Store


@pytest.fixture
def work(tmp_path, make_image, apptainer):
    for tag in ("a", "b"):
        make_image(tag, tmp_path / "containers")
    return tmp_path


@pytest.fixture(params=["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def client(request, work, monkeypatch):
    if request.param == "slurm":
        request.getfixturevalue("slurm")
        monkeypatch.chdir(work)
        cluster = SlurmCluster(queue="slurm", walltime="00:20:00", interface="lo")
    else:
        cluster = LocalCluster(work_dir=str(work))
    with cluster:
        cluster.add_container(tag="a", cpus=3, memory="1G")
        cluster.add_container(tag="b", cpus=3, memory="1G")
        cluster.add_workers(n=1, tag="a")
        cluster.add_workers(n=1, tag="b")
        with ScalableClient(cluster) as client:
            client.wait_for_workers(2, timeout=180)
            yield client


def entries(work):
    with dask.config.set({"scalable.work-directory": str(work), "scalable.cache.directory": None}):
        return Store().info()


@pytest.mark.root
def test_hits_across_tags_misses_on_changed_input_one_entry_from_concurrent_writers(work, client):
    # defined here so they travel by value: containerized workers cannot import this module
    from scalable import DirType, FileType, ValueType, cacheable

    @cacheable(return_type=ValueType, data=FileType, year=ValueType)
    def model(data, year):
        with open(data) as f:
            return {
                "image": os.environ.get("APPTAINER_NAME"),
                "sum": sum(map(int, f.read().split())) + year,
            }

    data = work / "inputs.txt"
    data.write_text("1 2 3")
    first = client.submit(model, str(data), 2020, tag="a").result()
    assert first == {"image": "a_container.sif", "sum": 2026}
    # a worker of another tag, in another image, finds a's result
    assert client.submit(model, str(data), 2020, tag="b", pure=False).result() == first
    assert entries(work)["entries"] == 1

    data.write_text("1 2 4")  # a changed input is a miss: b computes it
    assert client.submit(model, str(data), 2020, tag="b", pure=False).result() == {
        "image": "b_container.sif",
        "sum": 2027,
    }
    assert entries(work)["entries"] == 2

    gate = work / "go"

    @cacheable(tree=DirType)
    def heavy(tree, i):
        import time

        while not os.path.exists(os.path.join(tree, "..", "go")):  # all writers start together
            time.sleep(0.01)
        return bytes(range(256)) * 20000  # ~5 MB: writes overlap

    tree = work / "tree"
    tree.mkdir()
    (tree / "x.txt").write_text("x")
    # six calls of one key at once, three threads on each tag's worker
    futures = [
        client.submit(heavy, str(tree), 0, tag=tag, pure=False)
        for tag in ("a", "b")
        for _ in range(3)
    ]
    gate.write_text("")
    assert all(r == bytes(range(256)) * 20000 for r in client.gather(futures))
    info = entries(work)
    assert info["entries"] == 3 and info["leftovers"] == 0
    with dask.config.set({"scalable.work-directory": str(work), "scalable.cache.directory": None}):
        store = Store()
        with open(store._path(heavy.cache_key(str(tree), 0)), "rb") as f:
            assert pickle.load(f)["result"].value == bytes(range(256)) * 20000
