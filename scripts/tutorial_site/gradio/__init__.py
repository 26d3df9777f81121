"""A stand-in that makes ``import gradio`` fail, for the tutorials' runs (scripts/run_tutorials.py).

OpenEnv loads its optional Gradio web UI whenever ``gradio`` is installed, which costs seconds
per process; the tutorials use no UI. OpenEnv reads ModuleNotFoundError as "no UI" and goes on.
"""

raise ModuleNotFoundError("gradio is left out of the tutorials' runs", name="gradio")
