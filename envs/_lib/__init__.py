"""Code the environments share, private to the library: a helper process and its request protocol
(``child.py``), the base of environments backed by one (``process_env.py``), shipped task catalogs
(``tasks.py``), the errors of bad options (``options.py``)."""
