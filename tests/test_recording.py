"""Recording (server ``--record`` and client ``record=``), the file format, and replay against real servers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import anyio
import pytest

from openenv_ws import ValidationError, connect
from openenv_ws.fields import FieldFilter, compare
from openenv_ws.record import FORMAT, RecordFile, RecordingError, Writer, read_episodes

from .conftest import ROOT, wait_for


async def play_echo(url: str, **options) -> str:
    """Two episodes: events, a validation error, a state; returns the session id."""
    async with connect(url, "echo", options={"max_steps": 3}, **options) as env:
        await env.reset(seed=5)
        await env.step({"message": "hello"})
        await env.step({"message": "one two", "stream": True})
        with pytest.raises(ValidationError):
            await env.step({"message": 7})
        await env.state()
        await env.reset(seed=6, options={"note": "second"})
        await env.step({"message": "again"})
        return env.session_id


def openenv_ws(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "openenv_ws", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


async def test_server_records_one_file_per_episode(start_server, tmp_path):
    server = start_server("echo", "--sandbox", "inprocess", "--record", str(tmp_path))
    session_id = await play_echo(server.url)
    assert wait_for(lambda: len(list(tmp_path.glob("*.jsonl"))) == 2)  # files open on the writer thread
    files = sorted(tmp_path.glob("*.jsonl"))
    assert [f.name for f in files] == [f"echo-{session_id}-1.jsonl", f"echo-{session_id}-2.jsonl"]
    assert wait_for(lambda: read_episodes(files[1])[0].end is not None)  # written by the writer thread

    first = read_episodes(files[0])[0]
    header = first.header
    assert header["format"] == FORMAT and header["version"] == 1 and header["episode"] == 1
    assert header["env"] == "echo" and header["target"] == "openenv_ws_envs.echo:EchoEnvironment"
    assert header["backend"] == "inprocess" and header["session_id"] == session_id
    assert header["seed"] == 5 and header["options"] == {"max_steps": 3}
    assert header["server_version"] and header["created"].endswith("Z")
    assert header["nondeterministic_fields"] == ["state.episode_id"]
    shape = [(r.dir, r.tag) for r in first.frames]
    assert shape == [
        ("c2s", "reset"),
        ("s2c", "result"),
        ("c2s", "step"),
        ("s2c", "result"),
        ("c2s", "step"),
        ("s2c", "event"),
        ("s2c", "event"),
        ("s2c", "result"),
        ("c2s", "step"),
        ("s2c", "error"),
        ("c2s", "state"),
        ("s2c", "state"),
    ]
    assert [r.frame["data"] for r in first.frames if r.tag == "event"] == [{"word": "one"}, {"word": "two"}]
    assert first.frames[3].frame["observation"] == {"echoed_message": "hello", "message_length": 5}
    assert first.frames[9].frame["code"] == "validation" and first.frames[9].frame["path"] == "$.message"
    times = [r.ts for r in first.frames]
    assert times == sorted(times) and times[0] >= 0
    assert first.end == {"kind": "end", "ts": first.end["ts"], "reason": "reset"}

    second = read_episodes(files[1])[0]
    assert second.header["episode"] == 2 and second.header["seed"] == 6
    assert second.header["reset_options"] == {"note": "second"}
    assert [r.tag for r in second.frames] == ["reset", "result", "step", "result", "close", "closed"]
    assert second.end["reason"] == "closed by client"


async def test_client_records_every_episode_in_one_file(start_server, tmp_path):
    server = start_server("echo", "--sandbox", "inprocess")
    path = tmp_path / "client.jsonl"
    session_id = await play_echo(server.url, record=path)
    episodes = read_episodes(path)
    assert [e.header["seed"] for e in episodes] == [5, 6]
    assert all(e.header["recorder"] == "client" and e.header["session_id"] == session_id for e in episodes)
    assert [r.tag for r in episodes[0].frames].count("event") == 2
    assert episodes[0].end["reason"] == "reset" and episodes[1].end["reason"] == "closed by client"
    # Each line is one JSON object: readable with any JSON-lines tool.
    lines = path.read_text().splitlines()
    assert all(isinstance(json.loads(line), dict) for line in lines)


def test_a_killed_server_loses_at_most_the_last_frame(start_server, tmp_path):
    server = start_server("echo", "--sandbox", "subprocess", "--record", str(tmp_path))

    async def steps() -> None:
        async with connect(server.url, "echo", reconnect_attempts=0) as env:
            await env.reset(seed=1)
            for n in range(5):
                await env.step({"message": f"step {n}"})
            # The reply is on its way to disk as the client gets it; then the server dies.
            assert wait_for(lambda: sum(1 for _ in tmp_path.glob("*.jsonl")) == 1)
            path = next(tmp_path.glob("*.jsonl"))
            last = lambda: path.read_text().splitlines()[-1]  # noqa: E731
            assert wait_for(lambda: '"t":"result"' in last() and '"step 4"' in last())
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(10)
            with anyio.fail_after(5):
                while env.failed is None:  # the client notices, so that leaving the block does not wait
                    await anyio.sleep(0.01)

    anyio.run(steps)  # the client's close() finds its server gone: nothing to close
    episode = read_episodes(next(tmp_path.glob("*.jsonl")))[0]
    assert episode.end is None  # it never ended
    assert [r.tag for r in episode.frames] == ["reset", "result"] + ["step", "result"] * 5


def test_reader_rejects_what_it_cannot_read(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"kind": "frame"}\n')
    with pytest.raises(RecordingError, match="first record must be a header"):
        read_episodes(path)
    header = {"kind": "header", "format": FORMAT, "version": 99}
    path.write_text(json.dumps(header) + "\n")
    with pytest.raises(RecordingError, match="version 99"):
        read_episodes(path)
    header["version"] = 1
    frame = {"kind": "frame", "ts": 0.1, "dir": "c2s", "frame": {"t": "reset", "seq": 1}}
    path.write_text(json.dumps(header) + "\n" + json.dumps(frame) + '\n{"kind": "fra')  # cut mid-line
    (episode,) = read_episodes(path)
    assert episode.cut and len(episode.frames) == 1


def test_compare_names_fields_and_ignores_declared_ones():
    recorded = {"observation": {"items": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}], "t": 0.5}, "reward": 1.0}
    replayed = {"observation": {"items": [{"id": 9, "v": "a"}, {"id": 8, "v": "c"}], "t": 0.7}, "reward": 1}
    found = {d.path: (d.recorded, d.replayed) for d in compare(recorded, replayed)}
    assert found == {
        "observation.items[0].id": (1, 9),
        "observation.items[1].id": (2, 8),
        "observation.items[1].v": ("b", "c"),
        "observation.t": (0.5, 0.7),
    }  # 1.0 and 1 are the same reward
    ignore = FieldFilter(["observation.items[*].id", "observation.t"])
    assert [d.path for d in compare(recorded, replayed, ignore)] == ["observation.items[1].v"]
    assert [d.path for d in compare({"a": [1]}, {"a": [1, 2]})] == ["a[1]"]


def test_replay_passes_then_finds_the_first_divergence(start_server, tmp_path):
    server = start_server("echo", "--sandbox", "inprocess", "--record", str(tmp_path / "rec"))
    anyio.run(play_echo, server.url)
    assert wait_for(lambda: len(list((tmp_path / "rec").glob("*.jsonl"))) == 2)
    files = sorted((tmp_path / "rec").glob("*.jsonl"))
    assert wait_for(lambda: all(read_episodes(f)[0].end for f in files))

    result = openenv_ws("replay", *map(str, files))  # a server of its own; state.episode_id is declared
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok ") == 2 and "5 requests matched" in result.stdout

    result = openenv_ws("replay", str(files[0]), "--url", server.url)  # against a running server
    assert result.returncode == 0, result.stdout + result.stderr

    text = files[0].read_text().replace('"echoed_message":"one two"', '"echoed_message":"one too"')
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text(text.replace('"reward":0.5', '"reward":0.25'))
    result = openenv_ws("replay", str(tampered), *map(str, files))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "diverged at request 2 (step 1, seq 2)" in result.stdout
    assert "reward: recorded 0.25, replayed 0.5" in result.stdout
    assert "ok " not in result.stdout  # stopped at the first divergence

    result = openenv_ws("replay", "--keep-going", "--ignore", "reward", str(tampered))
    assert result.returncode == 1
    assert 'observation.echoed_message: recorded "one too", replayed "one two"' in result.stdout
    assert "request 3 (step 2, seq 3)" in result.stdout

    result = openenv_ws("replay", str(tmp_path / "missing.jsonl"))
    assert result.returncode == 2 and "cannot read" in result.stdout


def test_the_recorded_episodes_of_every_environment_replay():
    """tests/replays/ holds an episode of each built-in env; scripts/replay_episodes.py replays them all."""
    names = sorted(p.stem for p in (ROOT / "tests" / "replays").glob("*.jsonl"))
    assert names == ["coding", "echo", "gym", "shell", "textgames", "web"]
    cmd = [sys.executable, "scripts/replay_episodes.py"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok ") == 8, result.stdout


def test_a_file_that_cannot_be_written_is_dropped_not_fatal(tmp_path):
    (tmp_path / "not-a-dir").write_text("")
    writer = Writer()
    broken, fine = RecordFile(tmp_path / "not-a-dir" / "x.jsonl"), RecordFile(tmp_path / "ok.jsonl")
    for file in (broken, fine, broken):
        writer.put(file, {"kind": "end", "ts": 0.0, "reason": "test"})
    assert writer.flush()
    assert broken.failed and writer.errors == 1 and broken.handle is None
    assert fine.path.read_text() == '{"kind":"end","ts":0.0,"reason":"test"}\n' and writer.lines == 1


def test_a_recording_made_before_the_library_was_renamed_still_names_its_env():
    """Recordings of openenv-ws 0.1 name ``envs.echo:...``; the library now installs as openenv_ws_envs.

    (From the repository's root ``envs`` is still a folder on the path, so a name that imports nowhere
    stands in for it here.)"""
    from openenv_ws.errors import UnknownEnvError
    from openenv_ws.tools.replay import spec_for

    spec = spec_for({"env": "echo", "target": "gone_since_recorded.echo:EchoEnvironment"})
    assert spec.name == "echo" and spec.target == "openenv_ws_envs.echo:EchoEnvironment"
    with pytest.raises(UnknownEnvError):
        spec_for({"env": "not-registered", "target": "gone_since_recorded.nothing:Nothing"})
