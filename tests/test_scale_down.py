"""Scaling a tag down loses no held result; tasks left with no workers are said (issue 19).

On the local cluster and on the real test Slurm: a result held on the last worker of a tag
survives that worker's removal, whether another worker (of any tag) exists to take it or not.
"""

from __future__ import annotations

import dask
import pytest
from distributed import wait

from scalable import LocalCluster, ScalableClient
from waiting import wait_for


@pytest.fixture(autouse=True)
def quick_recovery():
    # retiring workers are looked at once per recovery pass
    with dask.config.set({"scalable.recovery.interval": "500ms"}):
        yield


def make_stage_one():
    # made here so it travels by value: containerized workers cannot import this module
    def stage_one(i):
        return {"stage": "gcam", "i": i, "data": list(range(1000))}

    return stage_one


def held_result_survives_with_no_other_worker(cluster, client, timeout):
    cluster.add_workers("gcam", 1)
    client.wait_for_workers(1, timeout=timeout)
    fut = client.submit(make_stage_one(), 7, tag="gcam")
    wait(fut, timeout=timeout)
    (name,) = list(cluster.workers)
    cluster.remove_workers("gcam", 1)
    assert fut.result(timeout=timeout)["i"] == 7  # was lost before: result() hung
    s = cluster.tag_status()["gcam"]
    assert (s["target"], s["retiring"], s["running"]) == (0, 1, 0)
    assert name in cluster.workers  # its job stays while the result is held
    del fut  # released: the worker leaves
    wait_for(
        lambda: not cluster.workers and cluster.tag_status()["gcam"]["retiring"] == 0,
        timeout,
        "the retiring worker to leave",
    )
    wait_for(lambda: not client.scheduler_info()["workers"], timeout, "its worker to be gone")


def held_result_moves_to_a_worker_of_another_tag(cluster, client, timeout):
    cluster.add_workers("gcam", 1)
    cluster.add_workers("stitches", 1)
    client.wait_for_workers(2, timeout=timeout)
    fut = client.submit(make_stage_one(), 3, tag="gcam")
    wait(fut, timeout=timeout)
    gcam_name = next(n for n in cluster.workers if n.startswith("gcam"))
    cluster.remove_workers("gcam", 1)
    wait_for(lambda: gcam_name not in cluster.workers, timeout, "the gcam worker to leave")
    assert cluster.tag_status()["gcam"]["retiring"] == 0
    holders = client.who_has(fut)[fut.key]
    info = client.scheduler_info()["workers"]
    assert [info[a]["name"] for a in holders] == [
        n for n in cluster.workers if n.startswith("stitches")
    ]
    # the natural next stage: feed gcam's result to stitches
    assert (
        client.submit(lambda r: r["i"] * 2, fut, tag="stitches", pure=False).result(timeout=timeout)
        == 6
    )


def forced_removal_drops_at_once(cluster, client, timeout):
    cluster.add_workers("gcam", 1)
    client.wait_for_workers(1, timeout=timeout)
    fut = client.submit(make_stage_one(), 1, tag="gcam")
    wait(fut, timeout=timeout)
    with pytest.warns(UserWarning, match=r"1 task\(s\) wait for tag 'gcam'"):
        cluster.remove_workers("gcam", 1, force=True)  # its result is lost: it is run again
    assert cluster.tag_status()["gcam"]["retiring"] == 0
    wait_for(lambda: not cluster.workers, timeout, "the worker to be removed")


@pytest.fixture
def local(tmp_path):
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        cluster.add_container(tag="gcam", cpus=1, memory="512M")
        cluster.add_container(tag="stitches", cpus=1, memory="512M")
        with ScalableClient(cluster) as client:
            yield cluster, client


def test_local_held_result_survives_removal_of_the_last_worker(local):
    held_result_survives_with_no_other_worker(*local, timeout=120)


def test_local_held_result_moves_to_another_tags_worker(local):
    held_result_moves_to_a_worker_of_another_tag(*local, timeout=120)


def test_local_forced_removal(local):
    forced_removal_drops_at_once(*local, timeout=120)


def test_tasks_left_without_workers_are_said(local):
    cluster, client = local
    cluster.add_workers("gcam", 1)
    futs = client.map(make_stage_one(), range(3), tag="gcam")
    with pytest.warns(
        UserWarning,
        match=r"task\(s\) wait for tag 'gcam', which has no workers: "
        r"cluster.add_workers\('gcam', 1\) runs them",
    ):
        cluster.remove_workers("gcam", 1)
    s = wait_for(
        lambda: (lambda s: s if s["waiting_tasks"] == 3 else None)(cluster.tag_status()["gcam"]),
        60,
        "3 waiting tasks",
    )
    assert s["warning"] == (
        "3 task(s) wait for tag 'gcam', which has no workers: "
        "cluster.add_workers('gcam', 1) runs them."
    )
    assert cluster.tag_status()["stitches"]["warning"] is None
    cluster.add_workers("gcam", 1)
    assert [f.result(timeout=120)["i"] for f in futs] == [0, 1, 2]
    assert cluster.tag_status()["gcam"]["warning"] is None


# -- the same on the real test Slurm ------------------------------------------------------------
@pytest.fixture
def on_slurm(tmp_path, apptainer, make_image, slurm):
    from scalable import SlurmCluster

    for tag in ("gcam", "stitches"):
        make_image(tag, tmp_path / "containers")
    with SlurmCluster(
        queue="slurm", walltime="00:30:00", work_dir=str(tmp_path), interface="lo"
    ) as cluster:
        cluster.add_container(tag="gcam", cpus=1, memory="512M")
        cluster.add_container(tag="stitches", cpus=1, memory="512M")
        with ScalableClient(cluster) as client:
            yield cluster, client


@pytest.mark.slurm
def test_slurm_held_result_survives_removal_of_the_last_worker(on_slurm):
    held_result_survives_with_no_other_worker(*on_slurm, timeout=240)


@pytest.mark.slurm
def test_slurm_held_result_moves_to_another_tags_worker(on_slurm):
    held_result_moves_to_a_worker_of_another_tag(*on_slurm, timeout=240)
