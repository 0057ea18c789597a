#!/usr/bin/env python3
"""Time larder's answers for a hidden resource that exists against one that does not. Both
are 404s that must not be told apart, by their bytes (tests/it/tenants.rs) or by their time:
the rules are decided before the store is touched, so neither is looked up.

Runs the release build on 127.0.0.1 (throttling off, access log off) with alice's hidden home
holding a file and a tree 40 folders deep, and for each of GET, HEAD, PUT and DELETE, as an
anonymous client and as bob (signed in), sends N requests of each kind interleaved, each on
a new connection (connected before its clock starts):

    existing   /home/alice/diary.txt           missing   /home/alice/nothing.txt
    deep       /home/alice/d0/.../d39/f.txt    deep-missing  /home/alice/d0/.../d39/none.txt

and prints the medians (and quartiles). Exits 1 if any pair's medians differ by 10% or more.

    python3 bench/hidden-timing.py [N]        (default N = 200)
"""
import base64
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
DEEP = "/".join(f"d{i}" for i in range(40))
PAIRS = [
    ("/home/alice/diary.txt", "/home/alice/nothing.txt"),
    (f"/home/alice/{DEEP}/f.txt", f"/home/alice/{DEEP}/none.txt"),
]


def basic(name, password):
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def main():
    binary = os.environ.get("LARDER_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "larder")
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        phc = subprocess.run([binary, "hash-password"], input=b"pw\n",
                             capture_output=True, check=True).stdout.decode().strip()
        config = os.path.join(tmp, "larder.toml")
        with open(config, "w") as f:
            f.write(f'sign_in_limit = 0\n'
                    f'[[account]]\nname = "alice"\npassword = "{phc}"\n'
                    f'[[account]]\nname = "bob"\npassword = "{phc}"\n'
                    '[[rule]]\npath = "/"\nread = ["*"]\nwrite = ["@authenticated"]\n'
                    '[[rule]]\npath = "/home/{account}"\nread = ["{account}"]\n'
                    'write = ["{account}"]\nhidden = true\n')
        root = os.path.join(tmp, "root")
        os.makedirs(os.path.join(root, "home", "alice", *DEEP.split("/")))
        for path in (PAIRS[0][0], PAIRS[1][0]):
            with open(root + path, "w") as f:
                f.write("secret")
        env = dict(os.environ, RUST_LOG="warn")
        server = subprocess.Popen([binary, "serve", root, "--port", "0", "--config", config],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        try:
            line = server.stdout.readline().decode()
            port = int(line.rsplit(":", 1)[1])
            failed = run(port, basic("bob", "pw"))
        finally:
            server.kill()
            server.wait()
    sys.exit(1 if failed else 0)


def timed(conn, method, path, auth):
    headers = {"Authorization": auth} if auth else {}
    body = b"x" if method == "PUT" else None
    # A write refused before its body is read ends its connection: every request gets a
    # new one, connected before the clock starts.
    conn.close()
    conn.connect()
    start = time.perf_counter()
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    elapsed = time.perf_counter() - start
    assert response.status == 404, (method, path, response.status)
    return elapsed * 1e6


def run(port, bob):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    failed = False
    print(f"{'case':44} {'existing µs':>22} {'missing µs':>22} {'diff':>6}")
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        for who, auth in (("anonymous", None), ("bob", bob)):
            for depth, (existing, missing) in zip(("shallow", "deep"), PAIRS):
                for _ in range(10):  # warm up
                    timed(conn, method, existing, auth)
                    timed(conn, method, missing, auth)
                samples = {existing: [], missing: []}
                for i in range(N):
                    # Interleave, alternating which goes first, so drift affects both alike.
                    order = (existing, missing) if i % 2 == 0 else (missing, existing)
                    for path in order:
                        samples[path].append(timed(conn, method, path, auth))
                medians = []
                cells = []
                for path in (existing, missing):
                    q = statistics.quantiles(samples[path], n=4)
                    medians.append(q[1])
                    cells.append(f"{q[1]:6.1f} ({q[0]:5.1f}-{q[2]:5.1f})")
                difference = abs(medians[0] - medians[1]) / max(medians)
                failed |= difference >= 0.10
                case = f"{method} {who}, {depth}"
                print(f"{case:44} {cells[0]:>22} {cells[1]:>22} {difference * 100:5.1f}%")
    print("medians within 10% of each other:", "no" if failed else "yes", f"(n={N} each)")
    return failed


if __name__ == "__main__":
    main()
