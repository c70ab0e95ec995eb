"""Tasks queued behind a running one are not failed by unrelated worker deaths."""

import os
import time

import pytest
from distributed import KilledWorker

from scalable import LocalCluster, ScalableClient
from waiting import wait_for


def test_queued_tasks_survive_repeated_worker_deaths(tmp_path):
    def slow(i):
        time.sleep(1.5)
        return i

    def die():
        os._exit(1)  # a worker lost for reasons of its own (think: scancel, node failure)

    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        cluster.add_container(tag="m", cpus=1, memory="512M")
        cluster.add_workers("m", 1)
        with ScalableClient(cluster) as client:
            client.wait_for_workers(1, timeout=180)
            futs = client.map(slow, range(8), tag="m")
            for _ in range(
                4
            ):  # Dask's default fails a task after 3 dead workers (allowed-failures)
                wait_for(lambda: client.scheduler_info()["workers"], 60, "a worker")
                time.sleep(0.3)  # mid-task, before any heartbeat says what runs
                try:
                    client.run(die)
                except Exception:
                    pass
            results = []
            for f in futs:
                try:
                    results.append(f.result(timeout=120))
                except KilledWorker:
                    results.append(None)
    # the one task running at each death may be blamed; the ones waiting behind it are not
    assert sum(r is not None for r in results) >= 4, results


def test_a_task_that_kills_its_workers_still_fails(tmp_path):
    def crash():
        time.sleep(0.5)
        os._exit(1)

    def slow(i):
        time.sleep(0.2)
        return i

    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        cluster.add_container(tag="m", cpus=1, memory="512M")
        cluster.add_workers("m", 1)
        with ScalableClient(cluster) as client:
            client.wait_for_workers(1, timeout=180)
            bad = client.submit(crash, tag="m", priority=10)  # first in line on every worker
            good = client.map(slow, range(6), tag="m")
            with pytest.raises(KilledWorker):
                bad.result(timeout=180)
            assert client.gather(good, errors="raise") == list(range(6))
