"""Per-tag adapt: each tag grows from its own waiting tasks and shrinks back (issue 15 item 2).

On the local cluster and on the real test Slurm with two partitions: two tags under a stream of
tasks, each grows to its maximum while its tasks queue and returns to its minimum after they
finish, no task lost, one ``sbatch`` per burst; a manual scale ends a tag's adapt.
"""

from __future__ import annotations

import dask
import pytest

from scalable import LocalCluster, ScalableClient
from waiting import wait_for

#: quick decisions, so tests see them within their deadlines
FAST = {"interval": "300ms", "wait_count": 2, "target_duration": "1s"}


def make_slow():
    # made here so it travels by value: containerized workers cannot import this module
    def slow(i, seconds=1.0):
        import time

        time.sleep(seconds)
        return i

    return slow


def target(cluster, tag):
    return cluster.targets[tag]


def two_tags_adapt(cluster, client, timeout):
    cluster.adapt(tag="gcam", minimum=0, maximum=3, **FAST)
    cluster.adapt(tag="stitches", minimum=1, maximum=2, **FAST)
    wait_for(lambda: target(cluster, "stitches") == 1, timeout, "stitches at its minimum")
    assert target(cluster, "gcam") == 0
    status = cluster.tag_status()
    assert status["gcam"]["adapt"] == {"minimum": 0, "maximum": 3}
    assert status["stitches"]["adapt"] == {"minimum": 1, "maximum": 2}

    gcam = client.map(make_slow(), range(12), tag="gcam", pure=False)
    stitches = client.map(make_slow(), range(8), tag="stitches", pure=False)
    seen = {"gcam": 0, "stitches": 0}

    def both_at_maximum():
        for tag in seen:
            seen[tag] = max(seen[tag], target(cluster, tag))
        return seen == {"gcam": 3, "stitches": 2}

    wait_for(both_at_maximum, timeout, "both tags to grow to their maximum")
    assert client.gather(gcam) == list(range(12))  # no task lost
    assert client.gather(stitches) == list(range(8))
    wait_for(
        lambda: target(cluster, "gcam") == 0 and target(cluster, "stitches") == 1,
        timeout,
        "both tags back at their minimum",
    )
    wait_for(
        lambda: cluster.tag_status()["gcam"]["running"] == 0, timeout, "gcam's workers to leave"
    )
    assert max(target(cluster, "gcam"), seen["gcam"]) <= 3  # never above its maximum

    # a manual scale of a tag ends its adapt, and only its own
    cluster.scale_tag("stitches", 2)
    assert cluster.tag_status()["stitches"]["adapt"] is None
    assert cluster.tag_status()["gcam"]["adapt"] == {"minimum": 0, "maximum": 3}
    assert target(cluster, "stitches") == 2


def test_local_two_tags_adapt_within_their_ranges(tmp_path):
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        cluster.add_container(tag="gcam", cpus=1, memory="512M")
        cluster.add_container(tag="stitches", cpus=1, memory="512M")
        with ScalableClient(cluster) as client:
            two_tags_adapt(cluster, client, timeout=240)


def test_adapt_without_a_tag_adapts_every_tag_or_says_why(tmp_path):
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        with pytest.raises(
            ValueError,
            match=r"no containers to adapt yet: call "
            r"cluster.add_container",
        ):
            cluster.adapt(minimum=0, maximum=2)
        cluster.add_container(tag="a", cpus=1, memory="512M")
        cluster.add_container(tag="b", cpus=1, memory="512M")
        both = cluster.adapt(minimum=0, maximum=2)
        assert sorted(both) == ["a", "b"]
        assert {t: s["adapt"] for t, s in cluster.tag_status().items()} == {
            "a": {"minimum": 0, "maximum": 2},
            "b": {"minimum": 0, "maximum": 2},
        }
        with pytest.raises(TypeError, match="adapt takes workers per tag"):
            cluster.adapt(tag="a", maximum_jobs=3)
        with pytest.raises(ValueError, match="minimum=3 is more than maximum=1"):
            cluster.adapt(tag="a", minimum=3, maximum=1)
        cluster.stop_adapt()
        assert all(s["adapt"] is None for s in cluster.tag_status().values())
        # nothing scales untagged: SpecCluster's untagged spec is closed off
        with pytest.raises(AttributeError, match="no untagged worker spec"):
            cluster.new_spec  # noqa: B018


def test_adapt_through_the_scheduler_handler(tmp_path):
    # what the JupyterLab sidebar calls, through the cluster's own scheduler
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        cluster.add_container(tag="gcam", cpus=1, memory="512M")

        def call(**kw):
            return cluster.sync(cluster.scheduler.handlers["scalable_adapt"], **kw)

        assert call(tag="GCAM", minimum=1, maximum=4)["adapt"] == {"minimum": 1, "maximum": 4}
        status = cluster.sync(cluster.scheduler.handlers["scalable_status"])
        assert status["tags"]["gcam"]["adapt"] == {"minimum": 1, "maximum": 4}
        wait_for(lambda: target(cluster, "gcam") == 1, 60, "the minimum")
        assert call(tag="gcam", minimum=0, maximum=None)["adapt"] == {"minimum": 0, "maximum": None}
        assert call(tag="gcam")["adapt"] is None  # both None: off
        bad = call(tag="nope", minimum=0, maximum=1)
        assert bad["status"] == "error" and "never added" in bad["message"]
        bad = call(tag="gcam", minimum=2, maximum=1)
        assert bad["status"] == "error" and "more than maximum" in bad["message"]
        # a scale through the REST route's handler ends adapt, as a manual scale
        call(tag="gcam", minimum=0, maximum=3)
        cluster.sync(cluster.scheduler.handlers["scalable_scale"], tag="gcam", n=2)
        assert cluster.tag_status()["gcam"]["adapt"] is None


# -- on the real test Slurm, two partitions ---------------------------------------------------
def squeue_of(slurm, cluster_id):
    out = slurm.run(["squeue", "--noheader", "--array", "--format=%j|%P|%l"]).stdout
    return {tuple(line.split("|")) for line in out.splitlines() if f"sc-{cluster_id}-" in line}


@pytest.mark.slurm
def test_slurm_two_tags_adapt_in_their_own_partitions(tmp_path, apptainer, make_image, slurm):
    from scalable import SlurmCluster

    for tag in ("gcam", "stitches"):
        make_image(tag, tmp_path / "containers")
    with (
        dask.config.set({"scalable.recovery.interval": "1s"}),
        SlurmCluster(
            queue="slurm", walltime="00:30:00", work_dir=str(tmp_path), interface="lo"
        ) as cluster,
    ):
        cluster.add_container("gcam", cpus=1, memory="256M", queue="debug", walltime="00:20:00")
        cluster.add_container("stitches", cpus=1, memory="256M")
        job = cluster.job_script("gcam")
        assert "#SBATCH -p debug" in job and "#SBATCH -t 00:20:00" in job
        with ScalableClient(cluster) as client:
            seen = set()

            def record():
                seen.update(squeue_of(slurm, cluster.cluster_id))
                return False

            cluster.adapt(tag="gcam", minimum=0, maximum=3, **FAST)
            wait_for(lambda: record() or True, 5, "a look at the queue")
            gcam = client.map(make_slow(), range(12), tag="gcam", pure=False)
            wait_for(lambda: record() or target(cluster, "gcam") == 3, 240, "gcam at 3")
            wait_for(
                lambda: (
                    record()
                    or len([n for n in cluster.workers if n.startswith("gcam")]) == 3
                    and squeue_of(slurm, cluster.cluster_id)
                ),
                120,
                "gcam's jobs in the queue",
            )
            record()
            assert (f"sc-{cluster.cluster_id}-gcam", "debug", "20:00") in seen
            assert client.gather(gcam) == list(range(12))
            ups = sum(1 for _, rec in cluster.pools["gcam"].adaptive.log if rec["status"] == "up")
            assert cluster.slurm_commands["sbatch"] == ups  # one sbatch per burst
            cluster.adapt(tag="stitches", minimum=1, maximum=2, **FAST)
            wait_for(
                lambda: record() or (f"sc-{cluster.cluster_id}-stitches", "slurm", "30:00") in seen,
                240,
                "stitches in its partition",
            )
            wait_for(lambda: target(cluster, "gcam") == 0, 240, "gcam back at its minimum")
            wait_for(
                lambda: not any(n.startswith("gcam") for n in cluster.workers),
                240,
                "gcam's jobs to end",
            )
            assert target(cluster, "stitches") == 1
