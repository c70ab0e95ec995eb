"""Adapt, retiring workers and a tag's own options, as the notebook shows them: ``%scalable``
and the panel."""

from __future__ import annotations

import dask
import pytest
from distributed import wait
from IPython.core.error import UsageError

from jupyter_fixtures import _ipython, shell  # noqa: F401  (fixtures)
from scalable import LocalCluster, ScalableClient
from scalable.jupyter import widget
from scalable.jupyter.magics import _alive
from waiting import wait_for


def magic(ip, line):
    return ip.run_line_magic("scalable", line)


@pytest.fixture
def ip(shell):
    shell.run_line_magic("load_ext", "scalable")
    magics = shell.magics_manager.registry["ScalableMagics"]
    yield shell
    if _alive(magics.cluster):
        magics._close(quiet=True)


def test_adapt_magic(ip, tmp_path, capsys):
    magic(ip, f"cluster --local --work-dir {tmp_path}")
    magic(ip, "container gcam --cpus 1 --memory 300M")
    magic(ip, "adapt gcam 1 3")
    assert "at least 1 worker(s), at most 3" in capsys.readouterr().out
    cluster = ip.user_ns["cluster"]
    wait_for(lambda: cluster.targets["gcam"] == 1, 60, "the minimum")
    (row,) = magic(ip, "status")
    assert row["adapt"] == "1-3"
    magic(ip, "adapt gcam 0")
    assert magic(ip, "status")[0]["adapt"] == "0-"  # no upper limit
    magic(ip, "scale gcam 2")  # by hand: adapt off
    assert magic(ip, "status")[0]["adapt"] == "off"
    magic(ip, "adapt gcam 0 2")
    magic(ip, "adapt gcam --off")
    assert cluster.tag_status()["gcam"]["adapt"] is None
    with pytest.raises(UsageError, match=r"say the range: `%scalable adapt gcam 0 10`"):
        magic(ip, "adapt gcam")
    with pytest.raises(UsageError, match="minimum=3 is more than maximum=1"):
        magic(ip, "adapt gcam 3 1")
    with pytest.raises(UsageError, match="queue= is a Slurm option"):
        magic(ip, "container other --queue debug")


@pytest.mark.slurm
def test_container_magic_takes_a_tags_own_options(ip, tmp_path, make_image, apptainer, capsys):
    make_image("gcam", tmp_path / "containers")
    magic(ip, f"cluster --queue slurm --interface lo --walltime 01:00:00 --work-dir {tmp_path}")
    magic(ip, "container gcam --cpus 1 --memory 300M --queue debug --walltime 00:20:00 --gpus 1")
    assert "queue debug, walltime 00:20:00, gpus 1" in capsys.readouterr().out
    script = ip.user_ns["cluster"].job_script("gcam")
    assert "#SBATCH -p debug" in script and "#SBATCH -t 00:20:00" in script
    assert "#SBATCH --gpus=1" in script


def test_panel_adapt_control_retiring_and_warning(tmp_path):
    with (
        dask.config.set(
            {
                "scalable.jupyter.refresh-interval": "200ms",
                "scalable.jupyter.click-delay": "0s",
                "scalable.recovery.interval": "500ms",
            }
        ),
        LocalCluster(work_dir=str(tmp_path)) as cluster,
    ):
        cluster.add_container(tag="gcam", cpus=1, memory="512M")
        panel = widget.panel_of(cluster)
        panel.adapt["gcam"].value = "1-2"  # typed into the adapt box
        assert cluster.tag_status()["gcam"]["adapt"] == {"minimum": 1, "maximum": 2}
        wait_for(lambda: cluster.targets["gcam"] == 1, 60, "the minimum")
        panel.adapt["gcam"].value = "2 to 5"
        assert "is not a range: write MIN-MAX" in panel.message.value
        panel.plus["gcam"].click()  # by hand: adapt off
        assert cluster.tag_status()["gcam"]["adapt"] is None
        wait_for(lambda: panel.adapt["gcam"].value == "", 30, "the adapt box to empty")

        with ScalableClient(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            held = client.map(lambda i: i, range(2), tag="gcam")
            wait(held, timeout=60)
            panel.target["gcam"].value = 0
            wait_for(
                lambda: "retiring <b>" in panel.counts["gcam"].value,
                60,
                "the panel to show retiring workers",
            )
            assert [f.result(timeout=60) for f in held] == [0, 1]
            del held
            wait_for(
                lambda: "retiring" not in panel.counts["gcam"].value,
                60,
                "the retiring workers to leave",
            )
            waiting = client.submit(lambda: 1, tag="gcam")
            wait_for(
                lambda: "scalable-warning" in panel.counts["gcam"].value,
                60,
                "the warning about waiting tasks",
            )
            assert (
                "cluster.add_workers(&#x27;gcam&#x27;, 1) runs them" in panel.counts["gcam"].value
            )
            del waiting
