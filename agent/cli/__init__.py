"""The ``cityedge`` command line: ``main`` dispatches; each other module is one subcommand
(or a family of them) and exposes ``register(subparsers)``."""
