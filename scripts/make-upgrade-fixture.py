#!/usr/bin/env python3
"""Writes the upgrade fixture: a data directory (embedded store and log) made by an earlier
pinhive release, for integration-tests/tests/upgrade.rs.

    python3 scripts/make-upgrade-fixture.py --rev d29c069            # builds that release
    python3 scripts/make-upgrade-fixture.py --rev d29c069 --bin PATH # or uses its binary

It starts the release's `pinhive serve` on a fresh data directory with one IPFS node nothing
listens on (so pins stay queued, as a node outage would leave them), makes tokens offline,
pins 40 CIDs of known content through the API, deletes 6 of them and replaces 4 with other
content, waits until the listing shows what was applied, stops the service with SIGTERM and
writes integration-tests/fixtures/upgrade/<rev>/data.tar.gz and manifest.json (the tokens,
the content of every CID, and what each request id must be after the upgrade).
"""

import argparse
import base64
import hashlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
PINS = 40
DELETED = range(0, 6)
REPLACED = range(6, 10)


def content(i):
    return f"pinhive upgrade fixture {i}\n".encode()


def raw_cid(data):
    """CIDv1, raw codec, sha2-256, base32: what `ipfs add --cid-version 1` gives a small file."""
    digest = hashlib.sha256(data).digest()
    cid = bytes([0x01, 0x55, 0x12, 0x20]) + digest
    return "b" + base64.b32encode(cid).decode().lower().rstrip("=")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(rev):
    work = pathlib.Path(tempfile.mkdtemp(prefix="pinhive-prev-"))
    tree = work / "src"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True)
    try:
        subprocess.run(["cargo", "build", "--locked", "-p", "pinhive"], cwd=tree, check=True)
        binary = work / "pinhive"
        shutil.copy(tree / "target/debug/pinhive", binary)
        return binary
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def request(method, url, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait(what, probe, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if probe():
            return
        time.sleep(0.1)
    sys.exit(f"timed out waiting for {what}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rev", required=True, help="the earlier release (a commit or tag)")
    parser.add_argument("--bin", help="that release's pinhive binary (built when absent)")
    args = parser.parse_args()
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.rev],
                         check=True, capture_output=True, text=True).stdout.strip()
    binary = pathlib.Path(args.bin) if args.bin else build(rev)
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip()
    work = pathlib.Path(tempfile.mkdtemp(prefix="pinhive-fixture-"))
    data = work / "data"

    def token(*flags):
        out = subprocess.run([str(binary), "token", "create", "--data-dir", str(data), *flags],
                             check=True, capture_output=True, text=True).stdout
        return out.strip().splitlines()[-1].strip()

    alice = token("--name", "alice")
    ops = token("--name", "ops", "--admin")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(work / "serve.log", "w")
    server = subprocess.Popen(
        [str(binary), "serve", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}",
         "--ipfs-node", f"n1=http://127.0.0.1:{free_port()}"],
        stdout=log, stderr=log)
    try:
        def healthy():
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    return True
            except OSError:
                return False
        wait("the service", healthy)
        pins = {}
        for i in range(PINS):
            status, body = request("POST", f"{base}/pins", alice,
                                   {"cid": raw_cid(content(i)), "name": f"fixture-{i}", "meta": {"i": str(i)}})
            assert status == 202, (status, body)
            pins[i] = body["requestid"]
        expected = []
        for i in range(PINS):
            entry = {"requestid": pins[i], "cid": raw_cid(content(i)), "name": f"fixture-{i}", "content": content(i).decode()}
            if i in DELETED:
                status, body = request("DELETE", f"{base}/pins/{pins[i]}", alice)
                assert status == 202, (status, body)
                entry["after"] = "deleted"
            elif i in REPLACED:
                j = PINS + i
                status, body = request("POST", f"{base}/pins/{pins[i]}", alice,
                                       {"cid": raw_cid(content(j)), "name": f"fixture-{i}"})
                assert status == 202, (status, body)
                entry["after"] = "replaced"
                expected.append({"requestid": body["requestid"], "cid": raw_cid(content(j)),
                                 "name": f"fixture-{i}", "content": content(j).decode(), "after": "pinned"})
            else:
                entry["after"] = "pinned"
            expected.append(entry)
        live = sum(1 for e in expected if e["after"] == "pinned")

        def applied():
            status, body = request("GET", f"{base}/pins?limit=1000&status=queued,pinning,pinned,failed", alice)
            return status == 200 and body["count"] == live
        wait("the listing to show every request applied", applied)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    assert code == 0, f"SIGTERM exit {code}: see {work / 'serve.log'}"

    out = ROOT / "integration-tests/fixtures/upgrade" / rev
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "data.tar.gz", "w:gz") as tar:
        tar.add(data, arcname="data")
    manifest = {
        "release": rev,
        "version": version,
        "made_by": f"python3 scripts/make-upgrade-fixture.py --rev {rev}",
        "node": "n1",
        "tokens": {"alice": alice, "ops": ops},
        "pins": expected,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    size = (out / "data.tar.gz").stat().st_size
    print(f"wrote {out}: data.tar.gz ({size} bytes), {len(expected)} requests, {live} to be pinned")


if __name__ == "__main__":
    main()
