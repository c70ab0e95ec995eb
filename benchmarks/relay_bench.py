"""Relay benchmark: what the host command relay adds to a command, and how it scales.

Starts a real relay (``scalable relay``, its own process, allowlist ``true echo``) and prints:

1. round trip of a trivial command (``true``): median and p99 through the relay vs run directly
   with :mod:`subprocess` (output captured, as :mod:`scalable.runner` does), and the relay's overhead per call (goal: < 0.5 ms median);
2. requests per second at 1, 8 and 64 concurrent clients (``echo <n>``), relay vs direct, with
   a check that every reply is the one its request asked for (no lost or mixed-up replies).

Run::

    python benchmarks/relay_bench.py [--calls 400] [--requests 640]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from scalable.relay import protocol
from scalable.relay.client import relay_arun, relay_run


def start_relay(directory):
    sock = os.path.join(directory, "relay", "relay.sock")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scalable.cli",
            "relay",
            "--socket",
            sock,
            "--allow",
            "true",
            "--allow",
            "echo",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    if not proc.stdout.readline().startswith("scalable relay serving"):
        raise SystemExit("relay did not start")
    return proc, sock


def timed(fn, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def p99(xs):
    return sorted(xs)[max(0, int(len(xs) * 0.99) - 1)]


async def burst(concurrency, total, call):
    sem = asyncio.Semaphore(concurrency)
    wrong = 0

    async def one(i):
        nonlocal wrong
        async with sem:
            out = await call(i)
        wrong += out != f"{i}\n"

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(total)))
    return total / (time.perf_counter() - t0), wrong


async def direct_echo(i):
    proc = await asyncio.create_subprocess_exec("echo", str(i), stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return out.decode()


async def relay_echo(i):
    return (await relay_arun(["echo", str(i)])).stdout


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=400, help="round trips per latency measurement")
    p.add_argument("--requests", type=int, default=640, help="requests per throughput measurement")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="relay-bench-") as d:
        proc, sock = start_relay(d)
        os.environ["SCALABLE_RELAY"] = sock
        try:
            for _ in range(20):  # warm up both paths
                relay_run(["true"])
                subprocess.run(["true"], capture_output=True)
            # the direct baseline captures output, as scalable.runner does
            direct = timed(lambda: subprocess.run(["true"], capture_output=True), args.calls)
            relayed = timed(lambda: relay_run(["true"]), args.calls)

            def empty_round_trip():  # the socket alone: a refused request runs nothing
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(sock)
                    s.sendall(
                        protocol.encode_header(protocol.request_header(["nope"], "/", None, 0))
                    )
                    protocol.recv_message(s)

            socket_only = timed(empty_round_trip, args.calls)
            rows = []
            for c in (1, 8, 64):
                d_rps, d_wrong = asyncio.run(burst(c, args.requests, direct_echo))
                r_rps, r_wrong = asyncio.run(burst(c, args.requests, relay_echo))
                rows.append((c, d_rps, r_rps, d_wrong + r_wrong))
        finally:
            proc.terminate()
            proc.wait()

    ms = lambda xs: 1000 * statistics.median(xs)  # noqa: E731
    print(f"\nRound trip of `true` ({args.calls} calls each, 2-core machine)")
    print(f"{'path':<28}{'median ms':>10}{'p99 ms':>10}{'ratio':>8}")
    print(f"{'subprocess.run (direct)':<28}{ms(direct):>10.3f}{1000 * p99(direct):>10.3f}{1:>8.2f}")
    print(
        f"{'relay_run (relay)':<28}{ms(relayed):>10.3f}{1000 * p99(relayed):>10.3f}"
        f"{statistics.median(relayed) / statistics.median(direct):>8.2f}"
    )
    print(
        f"{'socket round trip only':<28}{ms(socket_only):>10.3f}{1000 * p99(socket_only):>10.3f}"
        f"{statistics.median(socket_only) / statistics.median(direct):>8.2f}"
    )
    print(
        f"relay overhead per call (median relay - median direct): {ms(relayed) - ms(direct):.3f} ms"
    )
    print(f"\nThroughput of `echo N` ({args.requests} requests each)")
    print(
        f"{'clients':>8}{'direct req/s':>14}{'relay req/s':>13}{'relay/direct':>14}{'wrong replies':>15}"
    )
    for c, d_rps, r_rps, wrong in rows:
        print(f"{c:>8}{d_rps:>14.0f}{r_rps:>13.0f}{r_rps / d_rps:>14.2f}{wrong:>15}")
    return 1 if any(r[3] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
