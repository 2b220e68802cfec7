#!/usr/bin/env python3
"""How long erasing a user takes (docs/benchmarks.md section 6).

Starts the given im-server binary on a fresh embedded store (loopback,
port 18123), makes three app users and a group, posts N messages from
each of two of them through the server API, then times
`DELETE /api/v1/server/users/{id}?messages=recall` for one and
`?messages=keep` for the other. Bounded: N messages each, every request
with a 120 s timeout; the server is stopped at the end.

    cargo build --release -p im-server
    python3 bench/erasure.py target/release/im-server 1000
"""
import http.client
import json
import subprocess
import sys
import tempfile
import time

BIN, N = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1000
KEY = "erasure-bench-key-0123456789"
PORT = 18123

data = tempfile.mkdtemp(prefix="im-erasure-bench-")
server = subprocess.Popen(
    [BIN, "--listen", f"127.0.0.1:{PORT}", "--data-dir", data, "--server-api-key", KEY, "--user-rate-per-sec", "0"],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
conn = None
try:
    for _ in range(100):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            break
        except OSError:
            time.sleep(0.1)

    def call(method, path, body=None):
        headers = {"Authorization": "Bearer " + KEY, "Content-Type": "application/json"}
        conn.request(method, "/api/v1/server" + path, body=None if body is None else json.dumps(body), headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")

    ids = {s: call("POST", "/users", {"subject": s})[1]["id"] for s in ["a", "b", "c"]}
    _, group = call("POST", "/groups", {"owner": ids["b"], "name": "g", "members": [ids["a"], ids["c"]]})
    started = time.time()
    for who in ["a", "c"]:
        for i in range(N):
            body = {"conv": f"g:{group['id']}", "from": ids[who], "cmid": f"{who}-{i}", "body": f"message {i}"}
            status, _ = call("POST", "/messages", body)
            assert status == 201, status
    posting = time.time() - started
    started = time.time()
    status, recalled = call("DELETE", f"/users/{ids['a']}?messages=recall")
    recall_s = time.time() - started
    assert status == 200, (status, recalled)
    started = time.time()
    status, kept = call("DELETE", f"/users/{ids['c']}?messages=keep")
    keep_s = time.time() - started
    assert status == 200, (status, kept)
    print(json.dumps({
        "messages_per_user": N,
        "posting_s": round(posting, 2),
        "erase_recall_s": round(recall_s, 3),
        "recalled": recalled["messages_recalled"],
        "erase_keep_s": round(keep_s, 3),
    }))
finally:
    server.terminate()
    server.wait(timeout=30)
