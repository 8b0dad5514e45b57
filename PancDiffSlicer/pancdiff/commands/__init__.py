"""Subcommands of ``pancdiff``: one module each, with ``add_arguments(parser)`` and ``run(args, reporter)``.

``pancdiff.cli`` imports only the module of the command being run; heavy imports (torch, MONAI)
belong inside ``run`` so that ``--help`` and input errors stay fast.
"""
