"""The embedded default: the tagged API on local processes, with and without images."""

import os
import subprocess
import sys

import pytest

from scalable import LocalCluster, ScalableClient
from scalable.tagged import UnknownTagError


@pytest.fixture
def work(tmp_path, make_image):
    for tag in ("a", "b"):
        make_image(tag, tmp_path / "containers")
        (tmp_path / f"data_{tag}").mkdir()
        (tmp_path / f"data_{tag}" / f"{tag}.txt").write_text(tag)
    return tmp_path


@pytest.mark.root
def test_tags_route_to_their_own_images_and_binds(work, apptainer):
    # defined here so it travels by value: containerized workers cannot import this module
    def where(_=None):
        from distributed import get_worker

        w = get_worker()
        return {
            "image": os.environ.get("APPTAINER_NAME"),
            "tag": sorted(w.state.total_resources),
            "sees_a": os.path.exists("/data-a/a.txt"),
            "sees_b": os.path.exists("/data-b/b.txt"),
            "cwd": os.getcwd(),
        }

    def http_hosts(dask_worker):
        return sorted({s.getsockname()[0] for s in dask_worker.http_server._sockets.values()})

    with LocalCluster(work_dir=str(work)) as cluster:
        cluster.add_container(tag="a", cpus=1, memory="1G", dirs={"data_a": "/data-a"})
        cluster.add_container(tag="b", cpus=1, memory="1G", dirs={"data_b": "/data-b"})
        cluster.add_workers(n=2, tag="a")
        cluster.add_worker(n=1, tag="b")
        with ScalableClient(cluster) as client:
            client.wait_for_workers(3, timeout=180)
            a = client.gather(client.map(where, range(4), pure=False, tag="a"))
            b = client.submit(where, tag="b").result()
            http = client.run(http_hosts)
    assert all(
        r
        == {
            "image": "a_container.sif",
            "tag": ["a"],
            "sees_a": True,
            "sees_b": False,
            "cwd": str(work),
        }
        for r in a
    )
    assert b == {
        "image": "b_container.sif",
        "tag": ["b"],
        "sees_a": False,
        "sees_b": True,
        "cwd": str(work),
    }
    assert set(map(tuple, http.values())) == {("127.0.0.1",)}  # worker HTTP stays on loopback


def test_scale_per_tag_and_mistakes(tmp_path):
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        cluster.add_container(tag="x", cpus=1, memory="512M")
        cluster.add_container(tag="y", cpus=1, memory="512M")
        assert cluster.add_workers("x", 2) == ["x-0", "x-1"]
        cluster.scale_tag("y", 1)
        with ScalableClient(cluster) as client:
            client.wait_for_workers(3, timeout=180)
            status = cluster.tag_status()
            assert (status["x"]["running"], status["y"]["running"]) == (2, 1)
            assert cluster.remove_workers("x", 1) == ["x-1"]
            assert cluster.targets == {"x": 1, "y": 1}
            with pytest.raises(UnknownTagError, match=r"tag 'z' was never added.*'x', 'y'"):
                cluster.add_workers("z", 1)
            with pytest.raises(UnknownTagError, match="add_container\\(tag='z'"):
                client.submit(print, 1, tag="z")
            with pytest.raises(ValueError, match=r"submit\(\.\.\., n=2\) asks for 2 workers"):
                client.submit(print, 1, tag="x", n=2)
            with pytest.raises(ValueError, match="say which one"):
                cluster.scale(3)
            with pytest.raises(ValueError, match="whole number"):
                cluster.add_workers("x", -1)
            cluster.scale(0)
            assert cluster.targets == {"x": 0, "y": 0}
            # a tag with no workers warns once; its task waits instead of failing
            with pytest.warns(UserWarning, match="tag 'y' has no workers yet"):
                fut = client.submit(sum, [1, 2], tag="y")
            cluster.add_workers("y", 1)
            assert fut.result(timeout=60) == 3


def test_missing_image_with_path_is_refused(tmp_path):
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        with pytest.raises(ValueError, match="image .* does not exist"):
            cluster.add_container(tag="g", path="containers/g_container.sif")
        assert cluster.containers == {}


def test_demo_command(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "scalable.cli", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    assert "climate -> impacts" in out.stdout
    assert "dashboard http://127.0.0.1:" in out.stdout


def test_same_call_on_two_tags_gives_two_results(tmp_path):
    def who(x):
        from distributed import get_worker

        return x, sorted(get_worker().state.total_resources)

    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        cluster.add_container(tag="p", cpus=1, memory="512M")
        cluster.add_container(tag="q", cpus=1, memory="512M")
        cluster.add_workers("p", 1)
        cluster.add_workers("q", 1)
        with ScalableClient(cluster) as client:
            assert client.submit(who, 1, tag="p").result() == (1, ["p"])
            assert client.submit(who, 1, tag="q").result() == (1, ["q"])
            assert client.gather(client.map(who, [1, 2], tag="q")) == [(1, ["q"]), (2, ["q"])]
            assert client.gather(client.map(who, [1, 2], tag="p")) == [(1, ["p"]), (2, ["p"])]
