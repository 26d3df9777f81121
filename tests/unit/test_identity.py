"""Tokens, scopes and the per-client session count, without a server."""

from __future__ import annotations

import types

import pytest

from openenv_ws.server.access import ClientQuota
from openenv_ws.server.identity import (
    ANONYMOUS,
    OBSERVER,
    OPERATOR,
    TRAINER,
    Identity,
    TokenFileError,
    TokenGrant,
    TokenTable,
    parse_token_file,
)


def test_a_token_file_names_scopes_and_identities():
    grants = parse_token_file("# comment\n\n  tok-a trainer alice\ntok-b operator\ntok-c observer scraper\n")
    assert (grants[0].scope, grants[0].name) == (TRAINER, "alice")
    assert grants[1].scope == OPERATOR and grants[1].name.startswith("operator-") and len(grants[1].name) == 17
    table = TokenTable(grants)
    assert table.identify(b"tok-a") == Identity("alice", TRAINER)
    assert table.identify(b"tok-c") == Identity("scraper", OBSERVER)
    assert table.identify(b"tok-") is None and table.identify(b"") is None
    assert "tok-a" not in repr(grants[0])  # never the secret


@pytest.mark.parametrize(
    "text, error",
    [
        ("tok-a", "expected 'TOKEN SCOPE [NAME]'"),
        ("tok-a admin", "unknown scope 'admin'"),
        ("tok-a trainer alice extra", "got 4 fields"),
        ("tøk trainer", "printable ASCII"),
    ],
)
def test_a_bad_token_file_says_which_line(text, error):
    with pytest.raises(TokenFileError) as info:
        parse_token_file("# first\n" + text, "tokens.txt")
    assert str(info.value).startswith("tokens.txt:2: ") and error in str(info.value)


def test_a_token_table_refuses_ambiguity():
    with pytest.raises(TokenFileError, match="given twice"):
        TokenTable([TokenGrant("same", TRAINER, "a"), TokenGrant("same", TRAINER, "b")])
    with pytest.raises(TokenFileError, match="two scopes"):
        TokenTable([TokenGrant("one", TRAINER, "a"), TokenGrant("two", OPERATOR, "a")])
    rotated = TokenTable([TokenGrant("old", TRAINER, "a"), TokenGrant("new", TRAINER, "a")])
    assert rotated.identify(b"old") == rotated.identify(b"new")  # one identity, two tokens


def test_what_each_scope_may_do():
    alice, ops, scraper = Identity("alice", TRAINER), Identity("ops", OPERATOR), Identity("s", OBSERVER)
    assert alice.may_act("alice") and alice.may_see("alice")
    assert not alice.may_act("bob") and not alice.may_see("bob") and not alice.reads_metrics
    assert ops.may_act("bob") and ops.may_see("bob") and ops.reads_metrics and ops.opens_sessions
    assert scraper.may_see("bob") and scraper.reads_metrics
    assert not scraper.may_act("bob") and not scraper.opens_sessions and not scraper.may_act("s")
    assert ANONYMOUS.may_act("10.0.0.1") and ANONYMOUS.may_see(None)  # no tokens: open as before


def test_the_client_quota_counts_live_sessions_and_opens_in_flight():
    live: dict[str, object] = {}
    quota = ClientQuota(2, live)  # type: ignore[arg-type]
    assert quota.admit("a")
    live["s1"] = types.SimpleNamespace(owner="a")  # opened: live now, no longer opening
    quota.settle("a")
    assert quota.admit("a")  # a second one, opening
    assert not quota.admit("a")  # at the limit, counting the one opening
    quota.settle("a")  # that open failed: it counts no more
    live["s2"] = types.SimpleNamespace(owner="a")  # e.g. a fork's child: owned, so counted
    assert quota.held("a") == 2 and not quota.admit("a")
    assert quota.admit("b")  # another client
    quota.settle("b")
    del live["s1"]  # a session ended
    assert quota.held("a") == 1 and quota.admit("a")
    quota.settle("a")
    assert quota.held("a") == 1 and quota.held("b") == 0
    unlimited = ClientQuota(None, live)  # type: ignore[arg-type]
    assert all(unlimited.admit("a") for _ in range(10))
