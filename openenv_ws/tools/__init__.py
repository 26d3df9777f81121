"""The operator tools: the ``openenv-ws`` command (:mod:`.cli`) and what its commands run.

They sit on top of everything else (server, client, sandboxes); nothing in the runtime imports them.
"""
