"""The environment library shipped with openenv-ws: one package per environment."""
