"""The interpreter loop of the coding environment, run in a child process (standard library only).

Requests arrive as lines ``NONCE SPACE JSON`` on the socket in ``OPENENV_REQUEST_FD``. Each one ends
with a marker carrying its nonce on stderr (empty payload) and one on stdout whose payload is the
JSON result, after the output the code printed (see ``envs/_lib/child.py``). The socket is not
inherited by the programs the code starts. SIGINT interrupts running code (``KeyboardInterrupt``)
and is ignored between requests, so an interrupt that arrives late cannot break the loop.
"""

from __future__ import annotations

import ast
import json
import linecache
import os
import random
import signal
import sys
import traceback
from typing import Any

MAX_REPR = 10_000


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _format_exception(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next  # show the user's frames, not the driver's
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Interpreter:
    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
        self.cells = 0

    def execute(self, code: str) -> dict[str, Any]:
        """Run a cell like a notebook does: statements, then the value of a final expression."""
        self.cells += 1
        filename = f"<cell-{self.cells}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        result: dict[str, Any] = {"status": "ok", "value": None, "exception": None}
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            tree = ast.parse(code, filename, "exec")
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            exec(compile(tree, filename, "exec"), self.namespace)
            if last is not None:
                value = eval(compile(ast.Expression(last.value), filename, "eval"), self.namespace)
                if value is not None:
                    self.namespace["_"] = value
                    text = repr(value)
                    result["value"] = text if len(text) <= MAX_REPR else text[:MAX_REPR] + "..."
        except KeyboardInterrupt as exc:
            result.update(status="interrupted", exception=_describe(exc))
        except BaseException as exc:  # SystemExit included: the interpreter goes on, as in a notebook
            sys.stderr.write(_format_exception(exc))
            result.update(status="error", exception=_describe(exc))
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        return result

    def check(self, function: str, tests: list[list[Any]]) -> dict[str, Any]:
        """Call ``function`` on each argument list; results travel as canonical JSON (no ``__eq__`` tricks)."""
        results: list[str | None] = []
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            fn = self.namespace.get(function)
            for args in tests:
                try:
                    results.append(json.dumps(fn(*args), sort_keys=True))  # type: ignore[misc]
                except Exception:
                    results.append(None)
        except KeyboardInterrupt:
            pass  # the tests not reached count as failed
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        return {"results": results}


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd = int(os.environ.pop("OPENENV_REQUEST_FD"))
    os.set_inheritable(fd, False)
    seed = os.environ.pop("OPENENV_SEED", "")
    if seed:
        random.seed(int(seed))
    sys.path.pop(0)  # this file's folder is no place to import the user's modules from
    sys.argv = [""]
    sys.stdout.reconfigure(line_buffering=True)  # as on a terminal: a line at a time  # type: ignore[union-attr]
    interpreter = Interpreter()
    with os.fdopen(fd, "rb") as requests:
        for line in requests:  # ends when the environment closes the socket
            nonce, _, body = line.partition(b" ")
            marker = b"\0" + nonce + b" "
            request = json.loads(body)
            if request["op"] == "check":
                result = interpreter.check(request["function"], request["tests"])
            else:
                result = interpreter.execute(request["code"])
            sys.stdout.flush()
            sys.stderr.flush()
            _write_all(2, marker + b"\0")
            _write_all(1, marker + json.dumps(result).encode() + b"\0")


if __name__ == "__main__":
    main()
