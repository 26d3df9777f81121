"""Bridges to other environment ecosystems (OpenEnv), shared by the server and the client."""
