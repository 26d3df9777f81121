"""Who is calling: bearer tokens, the scope and name each one carries, and what a scope may do.

A server configured with tokens knows every caller by the token it sent. Each token grants one
scope and carries a name; the name is the caller's identity (two tokens with one name are one
identity, e.g. while a trainer's token is rotated). The scopes:

- ``operator``: sees, watches and acts on every session, opens sessions, reads ``/metrics``;
- ``trainer``: opens sessions, and sees, watches and acts on its own only;
- ``observer``: sees and watches every session and reads ``/metrics``, but opens and acts on
  none (a Prometheus scraper, an inspector on a shared server).

A server without tokens knows no one: every caller is :data:`ANONYMOUS`, an operator, as
before scopes existed. Pure: no I/O beyond reading a token file when asked.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

OPERATOR = "operator"
TRAINER = "trainer"
OBSERVER = "observer"
SCOPES = (OPERATOR, TRAINER, OBSERVER)

_SEES_ALL = frozenset({OPERATOR, OBSERVER})
_OPENS = frozenset({OPERATOR, TRAINER})


@dataclass(frozen=True, slots=True)
class Identity:
    """A caller: the name of its token (the owner recorded on the sessions it opens) and its scope."""

    name: str
    scope: str

    @property
    def opens_sessions(self) -> bool:
        return self.scope in _OPENS

    @property
    def reads_metrics(self) -> bool:
        return self.scope in _SEES_ALL

    def may_see(self, owner: str | None) -> bool:
        """List and watch a session opened by ``owner``."""
        return self.scope in _SEES_ALL or (self.scope == TRAINER and owner == self.name)

    def may_act(self, owner: str | None) -> bool:
        """Step, reset, close or resume a session opened by ``owner``."""
        return self.scope == OPERATOR or (self.scope == TRAINER and owner == self.name)


ANONYMOUS = Identity("anonymous", OPERATOR)
"""Every caller of a server without tokens: it may do anything, as on a server before scopes."""


class TokenFileError(ValueError):
    """A token file (or a token given on the command line) that cannot be used; says where."""


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """One configured token: the secret, its scope, and the identity's name."""

    token: str
    scope: str = OPERATOR
    name: str = ""
    """Empty: ``<scope>-<first 8 hex digits of the token's SHA-256>`` (names it without revealing it)."""

    def __post_init__(self) -> None:
        if not self.token or not self.token.isascii() or not self.token.isprintable() or " " in self.token:
            raise TokenFileError("a token must be non-empty printable ASCII without spaces")
        if self.scope not in SCOPES:
            raise TokenFileError(f"unknown scope {self.scope!r}; the scopes are {', '.join(SCOPES)}")
        if not self.name:
            digest = hashlib.sha256(self.token.encode()).hexdigest()[:8]
            object.__setattr__(self, "name", f"{self.scope}-{digest}")

    def __repr__(self) -> str:  # never the secret, not even in a traceback
        return f"TokenGrant(scope={self.scope!r}, name={self.name!r})"


def parse_token_file(text: str, source: str = "token file") -> list[TokenGrant]:
    """Lines ``TOKEN SCOPE [NAME]``; blank lines and lines starting with ``#`` are skipped."""
    grants = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) not in (2, 3):
            raise TokenFileError(f"{source}:{number}: expected 'TOKEN SCOPE [NAME]', got {len(fields)} fields")
        try:
            grants.append(TokenGrant(*fields))
        except TokenFileError as exc:
            raise TokenFileError(f"{source}:{number}: {exc}") from None
    return grants


def read_token_file(path: str | Path) -> list[TokenGrant]:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_token_file(text, str(path))


class TokenTable:
    """The configured tokens, looked up in constant time per token (every one is compared, always)."""

    def __init__(self, grants: Iterable[TokenGrant]) -> None:
        self._entries: list[tuple[bytes, Identity]] = []
        scopes: dict[str, str] = {}
        seen: set[str] = set()
        for grant in grants:
            if grant.token in seen:
                raise TokenFileError(f"the token named {grant.name!r} is given twice")
            if scopes.setdefault(grant.name, grant.scope) != grant.scope:
                raise TokenFileError(f"the name {grant.name!r} is given two scopes: one identity has one scope")
            seen.add(grant.token)
            self._entries.append((grant.token.encode(), Identity(grant.name, grant.scope)))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def secrets(self) -> list[str]:
        """The tokens themselves, for the log filter that keeps them out of the logs."""
        return [token.decode() for token, _ in self._entries]

    def identify(self, given: bytes) -> Identity | None:
        found = None
        for token, identity in self._entries:
            if secrets.compare_digest(given, token):
                found = identity
        return found


IDENTITY_KEY = "openenv_ws.identity"
"""Where the token check puts the caller's :class:`Identity` in the ASGI scope."""


def identity_of(scope: dict) -> Identity:
    """The caller of a request or WebSocket: its token's identity, or :data:`ANONYMOUS` on a server without tokens."""
    return scope.get(IDENTITY_KEY, ANONYMOUS)
