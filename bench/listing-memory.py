#!/usr/bin/env python3
"""A folder of 100,000 files, and 32 clients that ask for its HTML listing and never read the
answer. Prints larder's peak resident memory (VmHWM) over the run and the latency of a small
GET made meanwhile, over and over, on its own connection.

    python3 bench/listing-memory.py [SECONDS]        (default 10)
    LARDER_BIN=/path/to/larder python3 bench/listing-memory.py    (a given binary)

Runs on 127.0.0.1 only; stops by itself.
"""
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
FILES = 100_000
CLIENTS = 32


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main():
    binary = os.environ.get("LARDER_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
        binary = os.path.join(REPO, "target", "release", "larder")
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        root = os.path.join(tmp, "root")
        os.makedirs(os.path.join(root, "big"))
        for i in range(FILES):
            open(os.path.join(root, "big", f"file-{i:06}.txt"), "w").close()
        with open(os.path.join(root, "small.txt"), "w") as f:
            f.write("small\n")
        env = dict(os.environ, RUST_LOG="warn")
        server = subprocess.Popen([binary, "serve", root, "--port", "0"], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, env=env)
        try:
            port = int(server.stdout.readline().decode().rsplit(":", 1)[1])
            run(server.pid, port)
        finally:
            server.kill()
            server.wait()


def run(pid, port):
    # Warm the listing once (the store reads the folder), then note where memory starts.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", "/big/", headers={"Accept": "text/html"})
    first = conn.getresponse()
    size = len(first.read())
    conn.close()
    start_rss = status_kib(pid, "VmRSS")
    sockets = []
    for _ in range(CLIENTS):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /big/ HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n\r\n")
        sockets.append(s)  # never read
    latencies = []
    stop = time.monotonic() + SECONDS
    peak = start_rss
    small = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.monotonic() < stop:
        began = time.perf_counter()
        small.request("GET", "/small.txt")
        small.getresponse().read()
        latencies.append((time.perf_counter() - began) * 1000)
        peak = max(peak, status_kib(pid, "VmRSS"))
    for s in sockets:
        s.close()
    latencies.sort()
    print(f"listing of {FILES} files: {size / 1e6:.1f} MB per answer (page 1)")
    print(f"resident memory: {start_rss / 1024:.0f} MiB before the clients, peak {peak / 1024:.0f} MiB "
          f"with {CLIENTS} clients not reading")
    print(f"small GET meanwhile: {len(latencies)} requests, median {statistics.median(latencies):.2f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)]:.2f} ms, max {latencies[-1]:.2f} ms")


if __name__ == "__main__":
    main()
