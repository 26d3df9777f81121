"""Session ids name their node (pure functions, no I/O)."""

from __future__ import annotations

from openenv_ws.ids import MAX_NODE_CHARS, new_session_id, node_label, node_of


def test_an_id_names_its_node_and_a_plain_one_names_none():
    plain = new_session_id()
    assert plain.startswith("s-") and node_of(plain) is None
    named = new_session_id("oe-n3")
    assert named.startswith("s-") and named.endswith(".oe-n3") and node_of(named) == "oe-n3"
    assert new_session_id("oe-n3") != named  # the random part differs


def test_node_names_are_made_safe_for_ids_and_paths():
    assert node_label("Worker_1.example.com") == "worker-1-example-com"
    assert node_of(new_session_id("Worker_1.example.com")) == "worker-1-example-com"
    long = node_label("x" * 100)
    assert len(long) == MAX_NODE_CHARS
    assert node_label("---") == "" and node_of(new_session_id("---")) is None
