"""The agent's code against its sandbox, as an attacker would try it: through a real server, as actions.

Docker backend (under runc and under gVisor's runsc): from inside the coding and shell environments the
agent's code tries to take over its worker (ptrace, /proc/<worker>/mem and fd, signals, its socket), to
read or find its grader (the task files, a grep of the filesystem, the checker's command line and
environment) and to forge the markers that end its output. Each attempt fails or earns nothing, and
the episode goes on. Subprocess backend: what it promises (docs/security.md) — the server's secrets
are not inherited, a daemon dies with its session, nothing outlives a ``kill -9`` of the server, and
the worker's output reaches the server's log only framed.
"""

from __future__ import annotations

import ast
import os
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio
import pytest

from openenv_ws import SandboxCrashedError, connect
from openenv_ws_envs._lib.child import running

from .conftest import ServerProcess, wait_for
from .docker_envs import RUNTIMES

if TYPE_CHECKING:
    from .docker_fixtures import DockerServer, Engine

pytest_plugins = ["tests.docker_fixtures"]

# Strings only the hidden task files hold: a hidden test of the coding env, a setup and a checker of the shell env.
# Built at run time inside the sandbox, so the attacking code holds no copy of them to find.
NEEDLES = [
    "[[-1, -2, -3, -4, -5], -8]" + ", [2, 4]",
    "regions=(north" + " south east west)",
    "tr -d '[:space:]'" + " <",
]

# Everything the agent's code tries against its worker (the interpreter's parent), as one cell.
ATTACK_WORKER = r"""
import ctypes, errno, os, signal, socket
libc = ctypes.CDLL(None, use_errno=True)
worker = os.getppid()
def attempt(fn):
    try:
        result = fn()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, exc.errno)
    return "ok" if result is None else result
def call(fn, *args):
    result = fn(*args)
    return "ok" if result >= 0 else errno.errorcode[ctypes.get_errno()]
def fds():
    opened = {}
    for name in os.listdir(f"/proc/{worker}/fd"):
        try:
            fd = os.open(f"/proc/{worker}/fd/{name}", os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue
        opened[name] = attempt(lambda: os.read(fd, 100))
        os.close(fd)
    return opened
def connect_ipc():
    with socket.socket(socket.AF_UNIX) as s:
        s.connect("/ipc/sock")
def environ():
    with open(f"/proc/{worker}/environ", "rb") as f:
        return sorted(v.split(b"=")[0].decode() for v in f.read().split(b"\0") if v)
def read_mem():
    with open(f"/proc/{worker}/mem", "rb") as f:
        return f.read(1)
{
    "uid": os.getuid(), "caps": open("/proc/self/status").read().split("CapEff:")[1].split()[0],
    "ptrace_attach": call(libc.ptrace, 16, worker, 0, 0),
    "ptrace_seize": call(libc.ptrace, 0x4206, worker, 0, 0),
    "process_vm_readv": call(libc.process_vm_readv, worker, 0, 0, 0, 0, 0),
    "mem": attempt(read_mem),
    "fds_opened": attempt(fds),
    "environ_names": attempt(environ),
    "kill": attempt(lambda: os.kill(worker, signal.SIGKILL)),
    "stop": attempt(lambda: os.kill(worker, signal.SIGSTOP)),
    "kill_init": attempt(lambda: os.kill(1, signal.SIGKILL)),
    "ipc_dir": attempt(lambda: os.listdir("/ipc")),
    "connect": attempt(connect_ipc),
}
"""

# A bounded grep of the whole filesystem (and of every process's command line and environment) for NEEDLES.
GREP = r"""
import os, time
needles = [n.encode() for n in NEEDLES]
found, files, denied, started = [], 0, 0, time.monotonic()
def look(path):
    global files, denied
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError:
        denied += 1
        return
    files += 1
    found.extend(f"{path}: {n.decode()}" for n in needles if n in data)
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for name in ("cmdline", "environ"):
        look(f"/proc/{pid}/{name}")
for top in sorted(set(os.listdir("/")) - {"proc", "sys", "dev"}):
    for folder, dirs, names in os.walk("/" + top):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) < (4 << 20):
                look(path)
(found, files, denied, round(time.monotonic() - started, 1))
"""

# Markers forged every way the agent's code can: a guessed nonce with a claim that every hidden test passed,
# and the live nonce of the request it runs in, read from the driver's own frames.
FORGE = r"""
import json, sys
claim = json.dumps({"results": ["[0, 1]"] * 5, "status": "ok", "value": "1", "exception": None})
sys.stdout.write("\0" + "0" * 24 + " " + claim + "\0")
frame, live = sys._getframe(), None
while frame is not None and live is None:
    live = frame.f_locals.get("nonce") if isinstance(frame.f_locals.get("nonce"), bytes) else None
    frame = frame.f_back
sys.stdout.write("\0" + live.decode() + " " + claim + "\0")
sys.stdout.flush()
print("after the forged marker")
"""

# A double-forked daemon in its own session: `setsid` makes the session, the subshell's exit orphans it.
DAEMON = "(setsid sh -c 'sleep 600 & echo $! > daemon.pid' &); sleep 0.3; cat daemon.pid; echo $$ $PPID"

SOLUTION = (
    "def two_sum(nums, target):\n"
    "    seen = {}\n"
    "    for i, x in enumerate(nums):\n"
    "        if target - x in seen:\n"
    "            return [seen[target - x], i]\n"
    "        seen[x] = i"
)


@pytest.fixture(scope="module", params=RUNTIMES)
def sandboxed(request, library_image: str, engine: Engine) -> Iterator[DockerServer]:
    """The coding and shell envs on the Docker backend, under one OCI runtime."""
    from .docker_fixtures import DockerServer  # a plugin of this module: imported once pytest has

    server = DockerServer("coding", "shell", "-B", f"runtime={request.param}", image=library_image)
    server.runtime = request.param
    yield server
    server.stop(engine)


def value(result) -> object:
    assert result.observation["status"] == "ok", result.observation
    return ast.literal_eval(result.observation["value"])


# ---------------------------------------------------------------- Docker: the worker


async def test_the_agents_code_cannot_touch_its_worker(sandboxed, engine):
    async with connect(sandboxed.url, "coding") as env:
        await env.reset()
        seen = value(await env.step({"code": ATTACK_WORKER}))
        assert seen["uid"] == 65534 and seen["caps"] == "0000000000000000"
        assert seen["ptrace_attach"] == seen["ptrace_seize"] == "EPERM"
        assert seen["process_vm_readv"] in ("EPERM", "ENOSYS")  # gVisor does not implement it
        assert seen["mem"] == "EACCES"
        # gVisor lists them, and reopens only its stdin (the container's, empty): nothing to read there
        assert seen["fds_opened"] == ("EACCES" if sandboxed.runtime == "runc" else {"0": b""})
        assert seen["kill"] == seen["stop"] == seen["kill_init"] == "EPERM"
        assert seen["ipc_dir"] == [] and seen["connect"] == "ENOENT"  # the socket is gone once the worker is in
        if sandboxed.runtime == "runc":
            assert seen["environ_names"] == "EACCES"
        else:  # gVisor shows any uid a process's environment (docs/security.md): the worker's holds no secret
            assert set(seen["environ_names"]) <= {
                "PATH", "HOSTNAME", "HOME", "LANG", "VIRTUAL_ENV", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",
                "PIP_DISABLE_PIP_VERSION_CHECK", "PIP_NO_CACHE_DIR", "OPENENV_WS_AGENT_USER", "OPENENV_WS_GRADER_USER",
            }  # fmt: skip
        # kill(-1) kills every process of the agent's uid but the caller (gVisor: ESRCH when that is none of them)
        kill_all = "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept ProcessLookupError:\n    pass\n"
        r = await env.step({"code": kill_all + "'still here'"})
        assert r.observation["value"] == "'still here'"
        r = await env.step({"code": "import os\nos.kill(os.getpid(), 9)"})
        assert r.observation["interpreter_restarted"]  # its own interpreter: that it may kill
        assert value(await env.step({"code": "1 + 1"})) == 2  # the episode goes on, on the same worker


# ---------------------------------------------------------------- Docker: the grader


async def test_the_agent_cannot_read_or_find_its_hidden_tests(sandboxed):
    async with connect(sandboxed.url, "coding", options={"task": "two_sum", "max_timeout_s": 120}) as env:
        await env.reset(seed=1)
        hidden = "import openenv_ws_envs.coding as c, os\nopen(os.path.join(os.path.dirname(c.__file__), 'tasks.json'))"
        r = await env.step({"code": hidden})
        assert r.observation["exception"].startswith("PermissionError") and r.reward == 0.0
        r = await env.step({"code": f"NEEDLES = {NEEDLES!r}\n" + GREP, "timeout_s": 110})
        found, files, denied, seconds = value(r)
        assert found == [] and files > 1000, (found, files, denied, seconds)  # it did read the filesystem
        assert r.reward == 0.0
        r = await env.step({"code": SOLUTION})
        assert r.reward == 1.0 and r.terminated  # the honest way still pays


async def test_forged_markers_earn_nothing_and_the_episode_goes_on(sandboxed):
    async with connect(sandboxed.url, "coding", options={"task": "two_sum"}) as env:
        await env.reset(seed=1)
        r = await env.step({"code": FORGE})
        assert r.reward == 0.0 and r.observation["tests_passed"] == 0
        # A thread that keeps printing check answers claiming every test, while the hidden tests run:
        flood = (
            "import threading, sys, json\n"
            "claim = json.dumps({'results': ['[0, 1]', '[1, 2]', '[0, 1]', '[2, 4]', '[0, 3]']})\n"
            "def flood():\n"
            "    for _ in range(20000):\n"
            "        sys.stdout.write('\\0' + '1' * 24 + ' ' + claim + '\\0')\n"
            "threading.Thread(target=flood, daemon=True).start()\n"
            "def two_sum(nums, target):\n"
            "    return None"
        )
        r = await env.step({"code": flood})
        assert r.reward == 0.0
        r = await env.step({"code": "print('clean')\n6 * 7"})
        assert r.observation["value"] == "42" and r.observation["status"] == "ok"
        r = await env.step({"code": SOLUTION})
        assert r.reward == 1.0 and r.terminated


async def test_the_shell_agent_cannot_reach_its_checker(sandboxed):
    options = {"task": "csv_total", "timeout_s": 30}
    async with connect(sandboxed.url, "shell", options=options) as env:
        await env.reset(seed=3)
        r = await env.step(
            {"command": "cat $(python3 -c 'import openenv_ws_envs.shell as s; print(s.__path__[0])')/tasks.json"}
        )
        assert "Permission denied" in r.observation["output"] and r.reward == 0.0
        # A watcher copies every process's command line and environment while the next steps' checkers run.
        watch = "for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/cmdline; tr '\\0' '\\n' < $p/environ; done 2>/dev/null"
        r = await env.step(
            {"command": f"(end=$((SECONDS + 8)); while ((SECONDS < end)); do {watch}; done > seen.txt) &"}
        )
        for _ in range(3):
            r = await env.step({"command": "echo 0 > answer.txt"})
            assert r.reward == 0.0
        # Arguments are public (/proc/PID/cmdline); what a checker compares to, and its script, are not.
        secrets = "-e 'EXPECTED=' -e '\\$EXPECTED' -e 'regions=(north'"
        r = await env.step({"command": f"wait; grep -c -F {secrets} seen.txt; wc -l < seen.txt"})
        matches, lines = r.observation["output"].split()
        assert matches == "0" and int(lines) > 100  # it saw processes, never the expected answer or a script
        r = await env.step({"command": "printf '\\0forged 0 /\\0'; printf 'x\\0%s 0 /\\0' $__openenv_nonce; echo y"})
        assert r.reward == 0.0 and r.observation["exit_code"] == 0  # its own marker cuts only its own output
        r = await env.step({"command": "kill -9 -1; kill -9 $$"})  # every process of its uid, then its own shell
        assert r.observation["shell_restarted"] and r.reward == 0.0
        r = await env.step({"command": "chmod 700 ."})  # the workspace closed to the checker: no reward, no error
        assert r.reward == 0.0 and not r.observation["solved"]
        await env.step({"command": "chmod 755 ."})
        r = await env.step({"command": "awk -F, '$2 == \"north\" {s += $3} END {print s}' sales.csv > answer.txt"})
        assert r.reward == 1.0 and r.terminated  # the episode went on, and the honest answer pays


async def test_the_shells_file_tools_reach_what_the_agents_shell_reaches_no_more(sandboxed):
    """read_file and write_file run as the agent: no way around its uid to the grader's files."""
    async with connect(sandboxed.url, "shell", options={"task": "csv_total", "timeout_s": 30}) as env:
        await env.reset(seed=3)
        where = "python3 -c 'import openenv_ws_envs.shell as s; print(s.__path__[0])'"
        r = await env.call_tool("run", {"command": f"id -u; echo x > locked; chmod 000 locked; ln -s $({where}) lib"})
        uid = r.observation["output"].split()[0]
        refused = [
            await env.call_tool("read_file", {"path": path}) for path in ("locked", "lib/tasks.json", "/etc/shadow")
        ]
        assert refused[0].info["tool_error"] == "cannot read locked: Permission denied"
        assert [r.info["tool_error"] for r in refused[1:]] == [
            "lib/tasks.json: outside the workspace",
            "/etc/shadow: outside the workspace",
        ]
        await env.call_tool("write_file", {"path": "made/answer.txt", "content": "1"})
        owners = "python3 -c \"import os; print(os.stat('made').st_uid, os.stat('made/answer.txt').st_uid)\""
        r = await env.call_tool("run", {"command": f"{owners}; echo 2 >> made/answer.txt"})  # (gVisor has no statx)
        assert r.observation["output"].split() == [uid, uid] and r.observation["exit_code"] == 0
        assert r.reward == 0.0 and not r.terminated


async def test_a_new_episode_starts_with_none_of_the_last_ones_processes(sandboxed):
    """Before a task's setup runs as the agent's uid, every process of that uid is gone: none can tamper with it."""
    async with connect(sandboxed.url, "shell", options={"task": "count_errors"}) as env:
        await env.reset(seed=5)
        daemon = (await env.step({"command": DAEMON})).observation["output"].split()[0]
        assert (await env.step({"command": f"kill -0 {daemon} && echo alive"})).observation["output"] == "alive\n"
        await env.reset(seed=5)
        r = await env.step(
            {"command": f"kill -0 {daemon} 2>/dev/null || echo gone; set -- /tmp/openenv-shell-*; echo $#"}
        )
        assert r.observation["output"] == "gone\n1\n"  # and the last workspace is removed


async def test_scratch_space_and_logs_are_bounded(sandboxed, engine):
    async with connect(sandboxed.url, "coding") as env:
        await env.reset()
        (container,) = await anyio.to_thread.run_sync(lambda: engine.managed(session=env.session_id))
        host = container.attrs["HostConfig"]
        assert host["ShmSize"] == 16 << 20 and host["Runtime"] == sandboxed.runtime
        assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-file": "1", "max-size": "1m"}}
        assert host["CapAdd"] == ["SETUID", "SETGID", "KILL"] and host["CapDrop"] == ["ALL"]
        code = "import os\nst = os.statvfs('/dev/shm')\n(st.f_blocks * st.f_frsize, os.access('/dev/shm', os.W_OK))"
        assert value(await env.step({"code": code})) == (16 << 20, True)


async def test_an_env_may_ask_for_its_runtime(docker_serve, engine):
    server = docker_serve("tests.docker_envs:GVisorExecEnv")
    async with connect(server.url, "exec-gvisor") as env:
        await env.reset()
        (container,) = await anyio.to_thread.run_sync(lambda: engine.managed(session=env.session_id))
        assert container.attrs["HostConfig"]["Runtime"] == "runsc"
        r = await env.step(
            {"code": "import subprocess\nresult = subprocess.run(['dmesg'], capture_output=True).stdout"}
        )
        assert b"gVisor" in r.observation["result"]  # its kernel's own boot messages


def test_an_unknown_runtime_stops_the_server_at_start(library_image):
    with pytest.raises(RuntimeError, match="knows no runtime 'no-such-runtime'"):
        ServerProcess("coding", "--sandbox", "docker", "--image", library_image, "-B", "runtime=no-such-runtime")


# ---------------------------------------------------------------- the subprocess backend


def alive_soon(pids: list[int], timeout: float = 10.0) -> list[int]:
    """The pids still running after up to ``timeout`` seconds of waiting for them to end."""
    wait_for(lambda: not any(running(p) for p in pids), timeout)
    return [p for p in pids if running(p)]


def test_the_server_environment_is_not_inherited(start_server):
    server = start_server(
        "coding", "--sandbox", "subprocess", env={"OPENENV_WS_TOKEN": "tok-3141", "CLOUD_KEY": "k-27"}
    )

    async def main() -> None:
        async with connect(server.url, "coding", token="tok-3141") as env:
            await env.reset()
            code = "import os\n[open(f'/proc/{p}/environ', 'rb').read() for p in ('self', os.getppid())]"
            mine, worker = value(await env.step({"code": code}))
            for environ in (mine, worker):
                assert b"tok-3141" not in environ and b"k-27" not in environ and b"PATH=" in environ

    anyio.run(main)


def test_a_daemon_dies_with_its_session(start_server):
    server = start_server("shell", "--sandbox", "subprocess", "-B", "cgroups=0")  # the worker's own sweep

    async def main() -> list[int]:
        async with connect(server.url, "shell") as env:
            await env.reset()
            daemon, shell, worker = map(int, (await env.step({"command": DAEMON})).observation["output"].split())
            assert running(daemon) and os.getpgid(daemon) not in (os.getpgid(shell), os.getpgid(worker))
        return [daemon, shell, worker]

    assert alive_soon(anyio.run(main)) == []


def test_a_killed_worker_takes_its_daemons_along(start_server):
    if os.geteuid() != 0:
        pytest.skip("per-session cgroups need root")  # CI runs as root: there the cgroup must be in use
    server = start_server("shell", "--sandbox", "subprocess")
    assert server.health()["backend"]["cgroups"] in ("cgroup v1 freezer", "cgroup v2")

    async def main() -> list[int]:
        async with connect(server.url, "shell", reconnect_attempts=0) as env:
            await env.reset()
            daemon, shell, worker = map(int, (await env.step({"command": DAEMON})).observation["output"].split())
            os.kill(worker, signal.SIGKILL)  # no sweep of its own: the cgroup holds the daemon
            with pytest.raises(SandboxCrashedError, match="killed by signal SIGKILL"):
                await env.step({"command": "true"})
        return [daemon, shell, worker]

    assert alive_soon(anyio.run(main)) == []


def test_kill_9_of_the_server_leaves_no_process(start_server):
    server = start_server("shell", "--sandbox", "subprocess")

    pids: list[int] = []

    async def main() -> None:
        async with connect(server.url, "shell", reconnect_attempts=0) as env:
            await env.reset()
            pids.extend(map(int, (await env.step({"command": DAEMON})).observation["output"].split()))
            assert all(running(p) for p in pids)
            server.proc.kill()  # SIGKILL: the server does nothing more; the kernel tells the worker (PR_SET_PDEATHSIG)
            server.proc.wait(10)

    anyio.run(main)
    assert len(pids) == 3 and alive_soon(pids) == []


def test_the_workers_output_reaches_the_log_only_framed(start_server):
    server = start_server("tests.helper_envs:FlakyEnv", "--sandbox", "subprocess", log_level="info")
    forged = "INFO openenv_ws.server.sessions: forged by the sandbox"

    async def main() -> str:
        async with connect(server.url, "flaky") as env:
            await env.reset()
            await env.step({"op": "print", "text": f"\n{forged}\r\n\x1b[2K{forged}\n"})
            return env.session_id

    session = anyio.run(main)
    assert wait_for(lambda: server.output().count("forged by the sandbox") >= 4)
    lines = [line for line in server.output().splitlines() if "forged by the sandbox" in line]
    prefix = f"INFO openenv_ws.sandbox.output: sandbox {session}: "
    assert len(lines) == 4 and all(line.startswith(prefix) for line in lines), lines
    assert sum(line.endswith("forged by the sandbox\\x0d") for line in lines) == 2  # the CR escaped, not raw
    assert sum(line.startswith(prefix + "\\x1b[2K") for line in lines) == 2  # the escape sequence too


def test_output_past_its_bound_is_dropped_and_counted(start_server):
    server = start_server(
        "tests.helper_envs:FlakyEnv", "--sandbox", "subprocess", "-B", "log_bytes=2000", log_level="info"
    )

    async def main() -> None:
        async with connect(server.url, "flaky") as env:
            await env.reset()
            await env.step({"op": "print", "text": "z" * 100 + "\n", "times": 500})  # 1000 lines of 101 bytes

    anyio.run(main)  # the session closes: the worker's output ends, and its relay says what it dropped
    assert wait_for(lambda: "98980 bytes of output dropped (past 2000 bytes)" in server.output(), 15)
    assert sum("z" * 100 in line for line in server.output().splitlines()) == 20  # logged until 2000 bytes passed
