"""Tools for multi-turn episodes: a registry from YAML (``registry``), the call format
(``calls``), the built-ins (``calculator``, ``python_tool`` in the ``sandbox``), and the tool-use
environment (``environment``)."""
