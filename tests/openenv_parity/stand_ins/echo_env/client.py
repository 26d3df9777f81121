"""The echo environment's client: everything it does is calling tools, which ``MCPToolClient`` knows."""

from openenv.core.mcp_client import MCPToolClient


class EchoEnv(MCPToolClient):
    """``reset``, ``list_tools``, ``call_tool("echo_message", message=...)``, ``state``: all inherited."""
