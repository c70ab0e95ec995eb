"""Kernel start-up benchmark: the Scalable launcher vs a plain ipykernel kernelspec.

Installs two kernelspecs into a temporary prefix -- ``plain`` (``python -m ipykernel_launcher``)
and ``scalable`` (``scalable.kernel.launcher`` running ipykernel inside an image through the
container runtime: the bubblewrap stand-in ``tests/bin/apptainer`` here) -- then starts each
``--rounds`` times, alternating, and times start to the first ``kernel_info`` reply. A third
spec, ipykernel under the stand-in runtime without the launcher, splits the difference between
the container runtime and the launcher (relay, watchdog). Prints median, min and max per kernel
and the ratio to plain (goal: under 1.2x with the stand-in runtime).

Run::

    python benchmarks/kernel_bench.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import KernelManager

from scalable.kernel.install import install

TESTS_BIN = Path(__file__).resolve().parent.parent / "tests" / "bin"


def time_start(name: str) -> float:
    km = KernelManager(kernel_name=name)
    t0 = time.perf_counter()
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)  # sends kernel_info requests until one is answered
        return time.perf_counter() - t0
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kernel-bench-") as tmp:
        work = Path(tmp) / "work"
        (work / "containers").mkdir(parents=True)
        (work / "containers" / "scalable_container.sif").write_text("stand-in image\n")
        prefix = Path(tmp) / "prefix"
        os.environ["PATH"] = f"{TESTS_BIN}{os.pathsep}{os.environ['PATH']}"
        os.environ["JUPYTER_PATH"] = str(prefix / "share" / "jupyter")
        os.environ["SCALABLE_REGISTRY_DIR"] = str(Path(tmp) / "registry")
        install(work_dir=str(work), prefix=str(prefix))
        plain = prefix / "share" / "jupyter" / "kernels" / "plain"
        plain.mkdir(parents=True)
        (plain / "kernel.json").write_text(
            json.dumps(
                {
                    "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    "display_name": "plain",
                    "language": "python",
                }
            )
        )
        # the runtime alone, without the launcher: how much of the difference is the container's
        image = str(work / "containers" / "scalable_container.sif")
        runtime_only = prefix / "share" / "jupyter" / "kernels" / "runtime-only"
        runtime_only.mkdir(parents=True)
        conn_dir = os.path.dirname(KernelManager().connection_file) or tempfile.gettempdir()
        (runtime_only / "kernel.json").write_text(
            json.dumps(
                {
                    "argv": [
                        "apptainer",
                        "exec",
                        "--bind",
                        f"{conn_dir}:{conn_dir}",
                        image,
                        sys.executable,
                        "-m",
                        "ipykernel_launcher",
                        "-f",
                        "{connection_file}",
                    ],
                    "display_name": "runtime-only",
                    "language": "python",
                }
            )
        )
        os.chdir(work)
        times = {"plain": [], "runtime-only": [], "scalable": []}
        for name in times:  # warm the file cache once for each
            time_start(name)
        for _ in range(args.rounds):
            for name in times:
                times[name].append(time_start(name))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nKernel start to first kernel_info reply ({args.rounds} rounds, alternating)")
    print(f"{'kernelspec':<36}{'median s':>10}{'min s':>8}{'max s':>8}{'ratio':>8}")
    for name, label in (
        ("plain", "plain ipykernel"),
        ("runtime-only", "ipykernel in stand-in, no launcher"),
        ("scalable", "Scalable launcher + stand-in runtime"),
    ):
        v = times[name]
        print(
            f"{label:<36}{med[name]:>10.3f}{min(v):>8.3f}{max(v):>8.3f}{med[name] / med['plain']:>8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
