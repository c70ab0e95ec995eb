"""A SlurmCluster created in a Scalable kernel, with Slurm hidden from the image, via the relay."""

from __future__ import annotations

import json
import time

import pytest

from scalable.kernel.install import install
from test_kernel import kernel_env, run_code, started  # noqa: F401  (fixtures)
from test_relay_slurm import hide_slurm_binds

pytestmark = pytest.mark.slurm

WORKFLOW = """
import json, os, shutil
from scalable import ScalableClient, SlurmCluster
assert not os.path.exists('/run/munge/munge.socket.2')
sbatch = shutil.which('sbatch')
cluster = SlurmCluster(queue='slurm', walltime='00:10:00')   # no work_dir: the launcher set it
cluster.add_container(tag='gcam', cpus=1, memory='500M')
cluster.add_workers(n=1, tag='gcam')
client = ScalableClient(cluster)
client.wait_for_workers(1, timeout=150)
image = client.submit(lambda: os.environ.get('APPTAINER_NAME'), tag='gcam').result()
jobs = sorted({j['job_id'].split('_')[0] for j in cluster.jobs()})
client.close()
cluster.close()
print(json.dumps({'sbatch': sbatch, 'image': image, 'jobs': jobs, 'work': cluster.work_dir}))
"""


def test_slurm_cluster_in_the_kernel(slurm, kernel_env, started, make_image):
    work = kernel_env["work"]
    make_image("gcam", work / "containers")
    binds = [b for b in hide_slurm_binds(kernel_env["tmp"]) if b != "--bind"]
    install(work_dir=str(work), binds=binds, prefix=str(kernel_env["prefix"]))
    km, kc = started()
    out, err = run_code(kc, WORKFLOW, timeout=240)
    assert err is None, out
    got = json.loads(out.strip().splitlines()[-1])
    assert got["sbatch"].startswith(str(kernel_env["runtime"]))  # the relay's shim, not Slurm's
    assert got["image"] == "gcam_container.sif" and got["work"] == str(work)
    assert got["jobs"]
    deadline = time.monotonic() + 30
    while {j["job_id"].split("_")[0] for j in slurm.squeue()} & set(got["jobs"]):
        assert time.monotonic() < deadline, "close() in the kernel did not cancel the jobs"
        time.sleep(0.3)
