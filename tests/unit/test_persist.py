"""The state directory of ``serve --state-dir`` (server/persist.py): what is kept, read back, and refused."""

from __future__ import annotations

import pytest

from openenv_ws.protocol import Error, ErrorCode, GetState, Reset, Result, Step, encode, pack
from openenv_ws.server.persist import STATE_FILE, Journal, SavedSession, StateError, token_hash


def _journal(tmp_path, reply_cache: int = 2, max_history: int = 1 << 20) -> Journal:
    return Journal(tmp_path, reply_cache=reply_cache, max_history_bytes=max_history)


def _writer(tmp_path, **kw) -> Journal:
    """A journal holding the directory, as a server does after reading it at start."""
    journal = _journal(tmp_path, **kw)
    assert journal.load() is None
    journal.write_state("srv-x", [])
    return journal


def _reread(journal: Journal, tmp_path, **kw):
    """What the next server reads: the writer lets go of the directory first (a hand-off, or its death)."""
    journal.stop()
    return _journal(tmp_path, **kw).load()


def _session(sid: str = "s-1") -> SavedSession:
    return SavedSession(
        id=sid, token_hash=token_hash("tok"), env="echo", options={"a": 1}, owner="alice", sandbox={"container": "c"}
    )


def _result(seq: int, value: int) -> bytes:
    return encode(Result(seq=seq, observation=pack({"v": value})))


def _run_episode(journal: Journal, sid: str = "s-1", steps: int = 3) -> None:
    journal.opened(_session(sid))
    journal.answered(sid, Reset(seq=1), _result(1, 0))
    for seq in range(2, steps + 2):
        journal.answered(sid, Step(seq=seq, action=pack({"m": seq})), _result(seq, seq))


def test_a_journal_is_read_back_as_the_sessions_it_describes(tmp_path):
    journal = _writer(tmp_path)
    _run_episode(journal)
    journal.answered("s-1", GetState(seq=5), encode(Error(seq=5, code=ErrorCode.ENV_ERROR, message="no")))
    journal.keyed("s-1", "key-1")

    saved = _reread(journal, tmp_path)
    assert saved is not None and saved.instance == "srv-x"
    session = saved.sessions["s-1"]
    assert (session.applied, session.steps, session.open_key, session.owner) == (5, 3, "key-1", "alice")
    assert sorted(session.replies) == [4, 5]  # the last reply_cache answers
    history = session.episode(1 << 20)
    assert (history.started, history.steps, len(history.entries)) == (True, 3, 4)
    assert token_hash("tok") == session.token_hash and "tok" not in (tmp_path / STATE_FILE).read_bytes().decode(
        errors="replace"
    )


def test_a_closed_session_is_forgotten_and_a_record_cut_short_is_ignored(tmp_path):
    journal = _writer(tmp_path)
    _run_episode(journal, "s-1")
    _run_episode(journal, "s-2")
    journal.closed_session("s-1")
    path = next(tmp_path.glob("journal-*.msgpack"))
    data = path.read_bytes()
    path.write_bytes(data + (100).to_bytes(4, "big") + b"\x93partial")  # a write a crash cut short
    saved = _reread(journal, tmp_path)
    assert saved is not None and list(saved.sessions) == ["s-2"]


def test_a_new_state_file_folds_the_journal_in_and_starts_another(tmp_path):
    journal = _writer(tmp_path)
    _run_episode(journal)
    journal.stop()
    first = _journal(tmp_path)
    saved = first.load()
    assert saved is not None
    first.write_state(saved.instance, list(saved.sessions.values()))
    assert [p.name for p in tmp_path.glob("journal-*.msgpack")] == ["journal-2.msgpack"]
    first.answered("s-1", Step(seq=5, action=pack({"m": 5})), _result(5, 5))
    again = _reread(first, tmp_path)
    assert again is not None and again.sessions["s-1"].steps == 4 and again.sessions["s-1"].history_steps == 4


def test_a_long_episode_keeps_no_history_but_its_numbering(tmp_path):
    journal = _writer(tmp_path, max_history=200)
    _run_episode(journal, steps=20)
    session = _reread(journal, tmp_path, max_history=200).sessions["s-1"]
    assert session.history_dropped and session.history == [] and session.applied == 21


def test_a_stopped_journal_writes_nothing(tmp_path):
    journal = _writer(tmp_path)
    journal.write_state(None, [_session()])
    journal.stop()
    journal.answered("s-1", Reset(seq=1), _result(1, 0))
    assert _journal(tmp_path).load().sessions["s-1"].applied == 0  # type: ignore[union-attr]


def test_one_server_holds_the_directory_and_the_next_waits_for_it(tmp_path):
    journal = _writer(tmp_path)
    with pytest.raises(StateError, match="another server still holds"):
        _journal(tmp_path).load(wait=0.2)
    journal.stop()  # a hand-off lets go
    assert _journal(tmp_path).load(wait=0.2) is not None


def test_another_format_is_refused(tmp_path):
    (tmp_path / STATE_FILE).write_bytes(b"\x81\xa6format\xa5other")
    with pytest.raises(StateError):
        _journal(tmp_path).load()
