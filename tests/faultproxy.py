"""A fault-injecting HTTP proxy on loopback, in front of the S3-API test server.

It forwards every request to ``upstream`` (moto's server) byte for byte (the ``Host`` header
included, so SigV4 signatures still verify) and, where a :class:`Rule` says so, answers
something else instead:

==============  ===========================================================================
fault           what the client gets
==============  ===========================================================================
``503``         ``503 SlowDown`` (S3's throttling answer); the request never reaches the server
``500``         ``500 InternalError``; the request never reaches the server
``reset``       the connection closed with a TCP reset before anything is forwarded
``cut_headers`` the request is forwarded (the server acted), the answer is cut mid-headers
``cut_body``    the request is forwarded, the headers come whole (``Content-Length`` included),
                the body is cut halfway (a HEAD, which has no body, gets its headers cut)
``drop``        the request is forwarded (the server acted), the connection closes with no answer
``delay``       the answer comes after ``delay_s`` seconds (a client with a shorter timeout gives up)
==============  ===========================================================================

Which request gets a fault is deterministic for a seed: the *n*-th request of one
``(method, path)`` is hit when a hash of ``(seed, rule, method, path, n)`` falls under the
rule's ``rate``, whatever the order in which concurrent clients send their requests. Rules
target request kinds (``methods``, a ``key`` regular expression on the path, ``query``
on the query string) and may fire a bounded number of ``times``. ``counts`` says what the
proxy did; ``log`` lists every fault as ``(fault, method, path)``.

The proxy is a process of its own (``python -m tests.faultproxy UPSTREAM --seed N`` prints
its URL), as the store is: in the process of a job, its threads would wait for the GIL while
delta-rs holds it through a request (``DeltaTable.history`` does), and the request would
time out for want of an answer no real store withholds. :class:`FaultProxy` starts it and
sets its rules and reads its counts through ``/_faultproxy/`` (no bucket name starts
with ``_``), which is never faulted nor counted.

>>> proxy = FaultProxy("http://127.0.0.1:5000", seed=1).start()   # doctest: +SKIP
>>> proxy.reset([Rule("503", rate=0.15), Rule("cut_body", methods={"GET"}, key=r"weights-", times=1)])  # doctest: +SKIP
>>> proxy.counts["503"]                                           # doctest: +SKIP
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import http.client
import json
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("503", "500", "reset", "cut_headers", "cut_body", "drop", "delay")
#: Faults the server never sees (the request is not forwarded).
BEFORE = {"503", "500", "reset"}

_BODIES = {
    "503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "500": (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
}


@dataclass
class Rule:
    """One kind of fault, for the requests it targets: ``methods`` (None: any), ``key`` (a
    regular expression searched in the request's path, None: any), ``query`` (one searched in
    its query string); hit with probability ``rate`` (deterministic, see the module), at most
    ``times`` times (None: no bound)."""

    fault: str
    rate: float = 1.0
    methods: set[str] | None = None
    key: str | None = None
    query: str | None = None
    times: int | None = None
    delay_s: float = 5.0
    fired: int = field(default=0, compare=False)

    def __post_init__(self):
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}: one of {FAULTS}")
        self.methods = {m.upper() for m in self.methods} if self.methods else None

    def targets(self, method: str, path: str, query: str) -> bool:
        return ((self.methods is None or method in self.methods)
                and (self.key is None or re.search(self.key, path) is not None)
                and (self.query is None or re.search(self.query, query) is not None))


def _hit(seed: int, rule: int, method: str, path: str, nth: int, rate: float) -> bool:
    if rate >= 1.0:
        return True
    digest = hashlib.blake2b(f"{seed}|{rule}|{method}|{path}|{nth}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < rate


class Faults:
    """The proxy's state, in its process: the rules, what it did, how often it saw each request."""

    def __init__(self, seed: int):
        self.seed = seed
        self.rules: list[Rule] = []
        self.counts: collections.Counter = collections.Counter()
        self.log: list[tuple[str, str, str]] = []
        self._seen: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def reset(self, rules: list[Rule]) -> None:
        with self._lock:
            self.rules = list(rules)
            self.counts.clear()
            self.log.clear()

    def report(self) -> dict:
        with self._lock:
            return {"counts": dict(self.counts), "log": list(self.log)}

    def choose(self, method: str, path: str, query: str) -> Rule | None:
        """The fault this request gets (None: forwarded as it is); counts it."""
        with self._lock:
            self.counts["requests"] += 1
            self.counts[f"requests {method}"] += 1
            key = (method, path, query)
            nth = self._seen[key]
            self._seen[key] += 1
            for i, rule in enumerate(self.rules):
                if not rule.targets(method, path, query):
                    continue
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if _hit(self.seed, i, method, f"{path}?{query}", nth, rule.rate):
                    rule.fired += 1
                    self.counts[rule.fault] += 1
                    self.counts["faults"] += 1
                    self.log.append((rule.fault, method, path))
                    return rule
            return None


#: Where the proxy takes its rules and gives its counts.
CONTROL = "/_faultproxy/"


class FaultProxy:
    """A handle on the proxy process: ``start()`` (or ``with``) runs it on a free loopback
    port (:attr:`url`) in front of ``upstream``; :meth:`reset` gives it new rules (none: it is
    transparent) and zero counts; :attr:`counts` and :attr:`log` say what it did."""

    def __init__(self, upstream: str, *, seed: int = 0):
        self.upstream, self.seed = upstream, seed
        self._process: subprocess.Popen | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        assert self._url is not None, "start the proxy first"
        return self._url

    def start(self) -> "FaultProxy":
        self._process = subprocess.Popen([sys.executable, "-m", "tests.faultproxy", self.upstream, "--seed",
                                          str(self.seed)], cwd=Path(__file__).resolve().parents[1],
                                         stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"the fault proxy did not start ({line!r})")
        self._url = line
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)
            self._process = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _control(self, method: str, what: str, body: object = None):
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            conn.request(method, CONTROL + what, body=None if body is None else json.dumps(body))
            answer = conn.getresponse()
            data = answer.read()
            if answer.status != 200:
                raise RuntimeError(f"fault proxy: {answer.status} {data[:200]!r}")
            return json.loads(data) if data else None
        finally:
            conn.close()

    def reset(self, rules: list[Rule] | None = None) -> None:
        """New rules (none: transparent) and counts from zero."""
        self._control("PUT", "rules", [dataclasses.asdict(r) | {"methods": sorted(r.methods or [])}
                                       for r in (rules or [])])

    @property
    def counts(self) -> collections.Counter:
        return collections.Counter(self._control("GET", "report")["counts"])

    @property
    def log(self) -> list[tuple[str, str, str]]:
        return [tuple(entry) for entry in self._control("GET", "report")["log"]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _Handler(BaseHTTPRequestHandler):
    faults: Faults
    upstream: tuple[str, int]
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet
        pass

    def _upstream(self) -> http.client.HTTPConnection:
        conn = getattr(self, "_conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(*self.upstream, timeout=120)
            self._conn = conn
        return conn

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "connection")}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        for attempt in range(2):  # a kept-alive upstream connection the server closed: open another
            conn = self._upstream()
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                return answer.status, answer.reason, answer.getheaders(), data
            except (http.client.HTTPException, OSError):
                conn.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _head(self, status: int, reason: str, headers: list[tuple[str, str]], length: int) -> bytes:
        lines = [f"HTTP/1.1 {status} {reason}"]
        for k, v in headers:
            if k.lower() not in ("transfer-encoding", "content-length", "connection", "keep-alive"):
                lines.append(f"{k}: {v}")
        lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _close(self, *, reset: bool = False) -> None:
        self.close_connection = True
        try:
            if reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _control(self, body: bytes) -> None:
        what = self.path[len(CONTROL):]
        if self.command == "PUT" and what == "rules":
            self.faults.reset([Rule(**{**r, "methods": set(r["methods"]) or None, "fired": 0})
                               for r in json.loads(body)])
            answer = b""
        elif self.command == "GET" and what == "report":
            answer = json.dumps(self.faults.report()).encode()
        else:
            self.send_error(404)
            return
        self.wfile.write(self._head(200, "OK", [("Content-Type", "application/json")], len(answer)) + answer)
        self.wfile.flush()

    def _handle(self) -> None:
        path, _, query = self.path.partition("?")
        body = self._body()
        if path.startswith(CONTROL):
            self._control(body)
            return
        rule = self.faults.choose(self.command, path, query)
        fault = rule.fault if rule else None
        if fault == "reset":
            self._close(reset=True)
            return
        if fault in _BODIES:
            status, reason, code, message = _BODIES[fault]
            xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                   f'<Resource>{path}</Resource><RequestId>faultproxy</RequestId></Error>').encode()
            self.wfile.write(self._head(status, reason, [("Content-Type", "application/xml")], len(xml)) + xml)
            self.wfile.flush()
            return
        try:
            status, reason, headers, data = self._forward(body)
        except (http.client.HTTPException, OSError):
            self._close(reset=True)
            return
        if fault == "delay":
            assert rule is not None
            time.sleep(rule.delay_s)
        length = len(data)
        if self.command == "HEAD":  # no body: the object's size, as the server said it
            length = int(next((v for k, v in headers if k.lower() == "content-length"), 0))
        head = self._head(status, reason, headers, length)
        if fault == "drop":
            self._close()
            return
        if fault == "cut_headers" or (fault == "cut_body" and (self.command == "HEAD" or not data)):
            self.wfile.write(head[: max(1, len(head) // 2)])
            self._close()
            return
        if fault == "cut_body":
            self.wfile.write(head + data[: len(data) // 2])
            self._close()
            return
        self.wfile.write(head + (b"" if self.command == "HEAD" else data))
        self.wfile.flush()

    def do_GET(self):
        self._handle()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET


def serve(upstream: str, seed: int) -> None:
    """Run the proxy in this process until it is terminated; its URL is the first line on stdout."""
    parts = urlsplit(upstream)

    class Handler(_Handler):
        pass

    Handler.faults = Faults(seed)
    Handler.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
    server = _Server(("127.0.0.1", 0), Handler)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="A fault-injecting proxy in front of an S3-API server.")
    parser.add_argument("upstream")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    serve(args.upstream, args.seed)

