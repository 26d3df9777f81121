"""OpenEnv compatibility: its protocol on our server, our client on its servers, its environments on ours.

- :func:`openenv_routes`: OpenEnv's ``/ws`` and HTTP routes, for ``create_app(extensions=[...])``
  (the ``serve`` command adds them); modules ``ws``, ``http``, ``info``, ``server``.
- :func:`connect_openenv`, :class:`OpenEnvSession`: our client's API on an OpenEnv server
  (``connect(url, protocol="openenv")``); module ``client``.
- :func:`from_openenv`: an OpenEnv ``Environment`` class served by openenv-ws; module ``adapter``.
- The mapping of shapes between the two protocols: module ``wire``.

Names are imported on first use: a sandbox worker that imports the adapter never loads the
server or the client.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

_MODULES = {
    "OpenEnvAdapter": "adapter",
    "from_openenv": "adapter",
    "OpenEnvSession": "client",
    "connect_openenv": "client",
    "openenv_routes": "server",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .adapter import OpenEnvAdapter, from_openenv
    from .client import OpenEnvSession, connect_openenv
    from .server import openenv_routes

__all__ = ["OpenEnvAdapter", "OpenEnvSession", "connect_openenv", "from_openenv", "openenv_routes"]
