"""Subcommands of the ``kdmobile`` CLI, one module each with ``register(subparsers)``.

    kdmobile --help

Importing a command module must stay light (argparse only): heavy imports go inside its ``run``.
"""
