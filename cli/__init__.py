"""The ``bert-export`` command line: click commands, each a thin call into the Python API.

The top layer: nothing in the package imports ``bert_export.cli``. ``main.py`` builds the group
and registers every command module explicitly (docs/architecture.md).
"""
