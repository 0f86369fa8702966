"""Load on the HTTP service: single-surname predictions against 127.0.0.1, bounded in count and time.

    python benchmarks/serve.py [--model DIR] [--requests 5000] [--concurrency 16] [--threads 1]

Starts ``elman serve`` in a subprocess (the client runs in this process, on the same 2 cores), sends
``--requests`` POST /v1/predict requests of one surname each with ``--concurrency`` in flight, and prints
requests/s, p50/p90/p99 latency and the error count. Target: zero errors and p99 under 50 ms. Without
``--model``, it first trains the default classifier on ``../shared/data/surnames.csv`` for 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from elman.data import read_labelled_csv
from elman.training.classify import TrainConfig, train_classifier

TIME_LIMIT = 300  # seconds: the load stops by itself even if the server stalls


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def connection(port: int, bodies, latencies: list[float], deadline: float) -> int:
    """One keep-alive HTTP/1.1 connection sending requests back to back; returns its error count. A
    minimal client on purpose: it shares the 2 cores with the server and should take little of them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    errors = 0
    try:
        for body in bodies:
            if time.monotonic() > deadline:
                break
            began = time.perf_counter()
            writer.write(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            answer = await reader.readexactly(length)
            latencies.append(time.perf_counter() - began)
            errors += not (status.split()[1:2] == [b"200"] and b'"predictions"' in answer)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        errors += 1
    finally:
        writer.close()
    return errors


async def load(port: int, names: list[str], requests: int, concurrency: int) -> tuple[list[float], int, float]:
    bodies = iter(json.dumps({"texts": [names[i % len(names)]], "top_k": 3}).encode() for i in range(requests))
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = time.monotonic() + TIME_LIMIT
    errors = await asyncio.gather(*(connection(port, bodies, latencies, deadline) for _ in range(concurrency)))
    return latencies, sum(errors), time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="classifier checkpoint (default: train one for 60 s)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/surnames.csv"))
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    data = read_labelled_csv(args.data)
    model = args.model
    if model is None:
        model = args.out / "serve_classifier"
        train_classifier(data, model, config=TrainConfig(time_budget=60))
    names = data.texts[:]
    random.Random(0).shuffle(names)

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "elman", "serve", "--model", f"surnames={model}", "--port",
                               str(port), "--threads", str(args.threads)], stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start: {server.stderr.read()}") from None
                time.sleep(0.2)
        asyncio.run(load(port, names, 200, args.concurrency))  # warm-up, not counted
        latencies, errors, seconds = asyncio.run(load(port, names, args.requests, args.concurrency))
    finally:
        server.terminate()
        server.wait(10)

    result = {"requests": len(latencies), "concurrency": args.concurrency, "server_threads": args.threads,
              "errors": errors, "requests_per_second": len(latencies) / seconds,
              "p50_ms": 1000 * percentile(latencies, 0.5), "p90_ms": 1000 * percentile(latencies, 0.9),
              "p99_ms": 1000 * percentile(latencies, 0.99), "max_ms": 1000 * max(latencies)}
    print("| requests | concurrency | errors | requests/s | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {result['requests']} | {args.concurrency} | {errors} | {result['requests_per_second']:.0f} | "
          f"{result['p50_ms']:.1f} | {result['p90_ms']:.1f} | {result['p99_ms']:.1f} | {result['max_ms']:.1f} |")
    print(f"target (zero errors, p99 < 50 ms): {'met' if errors == 0 and result['p99_ms'] < 50 else 'MISSED'}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
