"""What an oversized HTTP body costs the server, and what the body limit costs a normal request.

Starts ``openenv-ws serve echo --sandbox inprocess`` on a free loopback port, then:

- pushes one request body of ``--mb`` MiB (``Content-Length`` declared, or chunked) to a route
  and reports the answer's status, how long until the server answered or closed, how much the
  client got to send, and the server's resident memory before and at its peak (``VmHWM``);
- times ``--requests`` sequential ``POST /step`` round trips (one keep-alive connection, an
  HTTP session of the echo env): median and p99.

``--pythonpath DIR`` runs the server from another checkout (e.g. the main branch), for a before
and after on the same machine:

    python scripts/bench_http_body.py --mb 300                                  # this checkout
    python scripts/bench_http_body.py --mb 300 --pythonpath /path/to/main       # another one
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

import httpx

from openenv_ws.server.local import free_port


def memory_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def push(port: int, route: str, size: int, chunked: bool, deadline: float) -> tuple[str, float, int]:
    """(status line or what ended it, seconds until the answer or the close, bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", port))
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    sock.sendall(f"POST {route} HTTP/1.1\r\nHost: bench\r\n{framing}\r\n\r\n".encode())
    sock.setblocking(False)
    chunk = b" " * 65536
    piece = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
    pieces = ([b"0\r\n\r\n"] if chunked else []) + [piece] * (size // len(chunk))  # sent from the end
    sent, answer, start, pending = 0, b"", time.perf_counter(), b""
    try:
        while time.perf_counter() - start < deadline:
            if not pending and pieces:
                pending = pieces.pop()  # a partial send's rest goes first: the chunks stay well-formed
            if pending:
                try:
                    written = sock.send(pending)
                    sent, pending = sent + written, pending[written:]
                except BlockingIOError:
                    time.sleep(0.0005)
                except OSError:
                    return "closed by the server", time.perf_counter() - start, sent
            try:
                data = sock.recv(65536)
                if not data:
                    return "closed by the server", time.perf_counter() - start, sent
                answer += data
                if b"\r\n\r\n" in answer:
                    return answer.split(b"\r\n")[0].decode(), time.perf_counter() - start, sent
            except BlockingIOError:
                pass
            except OSError:
                return "reset by the server", time.perf_counter() - start, sent
        return "no answer", deadline, sent
    finally:
        sock.close()


def step_round_trips(base: str, count: int) -> list[float]:
    with httpx.Client(base_url=base, timeout=30) as http:
        session = {"X-Session-Id": http.post("/reset", json={}).headers["x-session-id"]}
        times = []
        for _ in range(count):
            start = time.perf_counter()
            response = http.post("/step", json={"action": {"message": "hi"}}, headers=session)
            times.append(time.perf_counter() - start)
            response.raise_for_status()
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--mb", type=int, default=300, help="the oversized body, MiB (default 300)")
    parser.add_argument("--route", default="/mcp", help="where to send it (default /mcp)")
    parser.add_argument("--chunked", action="store_true", help="send it chunked instead of with Content-Length")
    parser.add_argument("--requests", type=int, default=2000, help="POST /step round trips to time (default 2000)")
    parser.add_argument("--deadline", type=float, default=60.0, help="give up on the push after this long (s)")
    parser.add_argument("--pythonpath", help="run the server from this checkout")
    args = parser.parse_args()

    port = free_port()
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    cmd = [sys.executable, "-m", "openenv_ws", "serve", "echo", "--sandbox", "inprocess", "--port", str(port)]
    server = subprocess.Popen(
        [*cmd, "--log-level", "warning"],
        env=env,
        cwd=args.pythonpath,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        before = memory_kib(server.pid, "VmRSS")
        status, seconds, sent = push(port, args.route, args.mb << 20, args.chunked, args.deadline)
        peak, after = memory_kib(server.pid, "VmHWM"), memory_kib(server.pid, "VmRSS")
        times = sorted(step_round_trips(base, args.requests))
        framing = "chunked" if args.chunked else "Content-Length"
        print(f"server: {args.pythonpath or 'this checkout'}")
        print(f"push {args.mb} MiB ({framing}) to {args.route}: {status} after {seconds * 1000:.1f} ms,")
        print(f"  client sent {sent / (1 << 20):.1f} MiB; server RSS {before // 1024} MiB before,")
        print(f"  peak {peak // 1024} MiB, {after // 1024} MiB after")
        median, p99 = statistics.median(times), times[int(len(times) * 0.99) - 1]
        print(f"POST /step x {len(times)}: median {median * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
