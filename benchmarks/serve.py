"""`fgvc serve` under load: requests/s and p50/p95 latency at 1, 4 and 16 concurrent clients, with and
without dynamic batching (BENCHMARKS.md, "Serve").

A baseline run is trained for one epoch on a few synthetic images (`fgvc train`; the weights do not
change the timing), then served by a real `fgvc serve` process per setting. Each client sends one
JPEG per request and waits for the answer before sending the next (closed loop). The server's
/metrics.json gives the forward passes, hence the mean batch. Prints a Markdown table.

    python benchmarks/serve.py [--backbone resnet50] [--size 448] [--requests 24]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from fgvc.cli import main as fgvc

SETTINGS = {"dynamic batching (16, 5 ms)": ["--max-batch", "16", "--batch-window-ms", "5"],
            "no batching": ["--max-batch", "1"]}


def make_data(folder: Path, size: int) -> Path:
    data = folder / "data"
    assert fgvc(["data", "synth", str(data), "--classes", "2", "--per-class", "4", "--size", str(size)]) == 0
    return data


def train_run(folder: Path, data: Path, backbone: str, size: int) -> Path:
    run = folder / "run"
    assert fgvc(["train", "--config", "demo", "--data", str(data), "--out", str(run), "--no-progress", "--no-report",
                 "--set", f"model.backbone={backbone}", "--set", f"model.input_size={size}", "--set", "train.epochs=1",
                 "--set", "train.batch_size=4", "--set", "data.num_workers=0", "--set", "train.device=cpu"]) == 0
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, source: Path, options: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", "fgvc", "serve", str(source), "--port", str(self.port),
                                         "--device", "cpu", *options], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.url + "/healthz", trust_env=False, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("fgvc serve did not start")
            time.sleep(0.2)

    def metrics(self) -> dict:
        return httpx.get(self.url + "/metrics.json", trust_env=False, timeout=10).json()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def load(url: str, photos: list[bytes], clients: int, per_client: int) -> tuple[float, list[float]]:
    """Seconds for all requests, and each request's latency."""
    def client(k: int) -> list[float]:
        times = []
        with httpx.Client(base_url=url, trust_env=False, timeout=600) as c:
            for i in range(per_client):
                start = time.perf_counter()
                reply = c.post("/predict", content=photos[(k + i) % len(photos)],
                               headers={"content-type": "image/jpeg"})
                reply.raise_for_status()
                times.append(time.perf_counter() - start)
        return times

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [t for times in pool.map(client, range(clients)) for t in times]
    return time.perf_counter() - start, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=24,
                        help="requests per concurrency level, at least 3 per client (default 24)")
    parser.add_argument("--run", type=Path, default=None, help="serve this run instead of training a fresh one")
    args = parser.parse_args()
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        os.environ.pop(name, None)

    with tempfile.TemporaryDirectory(prefix="fgvc-bench-serve-") as folder:
        data = make_data(Path(folder), args.size)
        photos = [p.read_bytes() for p in sorted((data / "test").glob("*.jpg"))]
        run = args.run or train_run(Path(folder), data, args.backbone, args.size)
        print(f"\n# baseline/{args.backbone} at {args.size} px, {os.cpu_count()} CPUs, one {args.size} px JPEG per "
              f"request, >= {args.requests} requests per level (>= 3 per client), one warm-up request per "
              "setting\n")
        print("| setting | clients | requests | requests/s | p50 (s) | p95 (s) | forward passes | mean batch |")
        print("|---|---|---|---|---|---|---|---|")
        for setting, options in SETTINGS.items():
            server = Server(run, options)
            try:
                load(server.url, photos, 1, 1)  # warm-up: first-call allocations, oneDNN primitive caches
                for clients in args.clients:
                    before = server.metrics()
                    per_client = max(3, -(-args.requests // clients))
                    seconds, latencies = load(server.url, photos, clients, per_client)
                    after = server.metrics()
                    passes = after["forward_passes"] - before["forward_passes"]
                    p95 = statistics.quantiles(latencies, n=20)[-1] if len(latencies) > 1 else latencies[0]
                    print(f"| {setting} | {clients} | {len(latencies)} | {len(latencies) / seconds:.2f} | "
                          f"{statistics.median(latencies):.3f} | {p95:.3f} | {passes} | "
                          f"{len(latencies) / passes:.1f} |", flush=True)
            finally:
                server.close()


if __name__ == "__main__":
    main()
