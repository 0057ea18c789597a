#!/usr/bin/env python3
"""Time larder's rejection of Basic credentials: an unknown account vs a known account with a
wrong password. Both must cost the same (a dummy argon2id verification stands in for the
unknown account), so a client cannot learn which account names exist.

Runs the release build on 127.0.0.1 with throttling off, sends N requests of each kind
interleaved on one keep-alive connection, and prints median, mean and p90 latencies and the
difference of the medians. Exits 1 if the medians differ by 10% or more.

    python3 bench/auth-timing.py [N]        (default N = 200)
"""
import base64
import http.client
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 200


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "larder")
    with tempfile.TemporaryDirectory() as tmp:
        phc = subprocess.run([binary, "hash-password"], input=b"the right one\n",
                             capture_output=True, check=True).stdout.decode().strip()
        config = os.path.join(tmp, "larder.toml")
        with open(config, "w") as f:
            f.write(f'sign_in_limit = 0\n[[account]]\nname = "alice"\npassword = "{phc}"\n'
                    '[[rule]]\npath = "/"\nread = ["*"]\n')
        server = subprocess.Popen([binary, "serve", os.path.join(tmp, "root"), "--port", "0",
                                   "--config", config],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            line = server.stdout.readline().decode()
            port = int(line.rsplit(":", 1)[1])
            run(port)
        finally:
            server.kill()
            server.wait()


def timed(conn, user):
    credentials = f"{user}:{secrets.token_hex(8)}".encode()
    header = "Basic " + base64.b64encode(credentials).decode()
    start = time.perf_counter()
    conn.request("GET", "/", headers={"Authorization": header})
    response = conn.getresponse()
    response.read()
    elapsed = time.perf_counter() - start
    assert response.status == 401, response.status
    return elapsed * 1000


def run(port):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(10):  # warm up
        timed(conn, "alice")
        timed(conn, "mallory")
    unknown, known = [], []
    for i in range(N):
        # Interleave, alternating which goes first, so drift affects both alike.
        pair = [("mallory", unknown), ("alice", known)]
        for user, sink in (pair if i % 2 == 0 else pair[::-1]):
            sink.append(timed(conn, user))
    report = []
    for name, samples in (("unknown account", unknown), ("known account, wrong password", known)):
        samples.sort()
        report.append(statistics.median(samples))
        print(f"{name:32} median {statistics.median(samples):7.2f} ms   "
              f"mean {statistics.mean(samples):7.2f} ms   p90 {samples[int(0.9 * len(samples))]:7.2f} ms"
              f"   (n={len(samples)})")
    difference = abs(report[0] - report[1]) / max(report)
    print(f"difference of medians: {difference * 100:.1f}% (must be under 10%)")
    sys.exit(0 if difference < 0.10 else 1)


if __name__ == "__main__":
    main()
