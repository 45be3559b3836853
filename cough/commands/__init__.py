"""The command line of each job, one module per job (``cough <job>``, ``python -m jobs.<job>``):
``HELP``, ``EXAMPLE``, ``add_arguments(parser)`` and ``run(args) -> dict``, which calls the
job's typed library function. cough/cli.py turns them into subcommands."""
