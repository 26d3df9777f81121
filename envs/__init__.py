"""The environment library shipped with openenv-ws: one package per environment.

Installed as ``openenv_ws_envs`` (the folder keeps its short name; see setup.py), so import
``openenv_ws_envs.echo``, never ``envs.echo``. ``_lib/`` holds what the environments share.
"""
