"""The session core: the rules of a session as plain state machines (no I/O, no event loop).

:mod:`.server` holds the server side (numbering, reply cache, queue, attach/detach/resume),
:mod:`.client` the client side (numbering, pending calls, dispatch, what to resend). The
server's connections, multiplexed channels, OpenEnv endpoints and the client are thin
adapters over them; ``tests/unit/`` states every rule against them with a fake clock.
"""
