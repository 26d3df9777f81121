"""Session ids, and the node each one names.

In a cluster every server stamps its node's name on the ids it hands out (``s-<hex>.<node>``),
so a client that holds only an id knows which node holds the session: resumes go there, with
no shared state store. A server outside a cluster hands out plain ``s-<hex>`` ids. Pure: the
client and the server both read ids with these functions.
"""

from __future__ import annotations

import re
import secrets

NODE_SEPARATOR = "."
"""Between the random part of an id and its node's name (the random part has no dot)."""
MAX_NODE_CHARS = 32
"""A node's name is cut to this length in ids: they also name socket directories (paths are bounded)."""


def node_label(name: str) -> str:
    """``name`` as ids carry it: lower case, letters, digits and ``-`` only, at most 32 characters."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return label[:MAX_NODE_CHARS].rstrip("-")


def new_session_id(node: str = "") -> str:
    """A fresh session id; with ``node``, one that names that node."""
    random_part = "s-" + secrets.token_hex(8)
    label = node_label(node) if node else ""
    return f"{random_part}{NODE_SEPARATOR}{label}" if label else random_part


def node_of(session_id: str) -> str | None:
    """The node a session id names (as :func:`node_label` wrote it), or None for a plain id."""
    _, separator, label = session_id.partition(NODE_SEPARATOR)
    return label if separator and label else None
