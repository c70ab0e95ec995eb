"""How fast @cacheable hashes file and directory arguments, against the machine's own tools.

Writes one file of ``--size-mb`` MB (random bytes) and a directory of ``--files`` files of the
same total size in a temporary directory, then, interleaved for ``--repeats`` rounds so that a
change of load hits all alike, times

* ``cat FILE > /dev/null``      (reading alone: the ceiling),
* ``sha256sum FILE`` and ``b2sum FILE``  (the usual tools),
* ``scalable.hashing.file_digest``  (what a ``FileType`` argument costs),
* ``scalable.hashing.dir_digest`` on the directory (what a ``DirType`` argument costs),
* a cache hit of a ``@cacheable(data=FileType)`` call (hash + lookup + unpickle of a small value).

The file is read once first, so every row measures the page cache, not the disk: on a shared
filesystem the disk (or network) is the limit and the hash rate above is headroom. Prints the
median MB/s of each and its ratio to ``cat``. Nothing is asserted.

    python benchmarks/cache_bench.py                 # 1 GB, 5 rounds
    python benchmarks/cache_bench.py --size-mb 200 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dask

from scalable import FileType, cacheable
from scalable.hashing import dir_digest, file_digest


def write_random(path: str, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def tool(*argv):
    return lambda: subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mb", type=int, default=1024)
    p.add_argument("--files", type=int, default=64, help="files in the directory case")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    size = args.size_mb << 20
    top = tempfile.mkdtemp(prefix="cache-bench-")
    try:
        big = os.path.join(top, "big.bin")
        write_random(big, size)
        tree = os.path.join(top, "tree")
        os.makedirs(os.path.join(tree, "sub"))
        for i in range(args.files):
            write_random(
                os.path.join(tree, "sub" if i % 2 else "", f"f{i:04d}.bin"), size // args.files
            )
        subprocess.run(["cat", big], check=True, stdout=subprocess.DEVNULL)  # warm the page cache

        with dask.config.set({"scalable.cache.directory": os.path.join(top, "cache")}):

            @cacheable(data=FileType)
            def model(data):
                return "result"

            model(big)  # stored; the rounds below are hits
            cases = {
                "cat > /dev/null": tool("cat", big),
                "sha256sum": tool("sha256sum", big),
                "b2sum (BLAKE2b-512)": tool("b2sum", big) if shutil.which("b2sum") else None,
                "scalable file_digest": lambda: file_digest(big),
                "scalable dir_digest": lambda: dir_digest(tree),
                "@cacheable hit (FileType)": lambda: model(big),
            }
            cases = {k: v for k, v in cases.items() if v is not None}
            times = {k: [] for k in cases}
            for _ in range(args.repeats):
                for name, fn in cases.items():
                    times[name].append(timed(fn))

        mb = size / 1e6
        base = mb / statistics.median(times["cat > /dev/null"])
        print(
            f"{args.size_mb} MiB file ({mb:.0f} MB), directory of {args.files} files of the same total; "
            f"median of {args.repeats}, page cache warm"
        )
        print(f"{'what':<28} {'MB/s':>8} {'min-max MB/s':>16} {'vs cat':>7}")
        for name, ts in times.items():
            rates = [mb / t for t in ts]
            med = statistics.median(rates)
            print(
                f"{name:<28} {med:>8.0f} {min(rates):>7.0f}-{max(rates):<8.0f} {med / base:>7.2f}"
            )
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
