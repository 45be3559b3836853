"""maintain: compact, checkpoint and vacuum PRED and its ledger (see :mod:`cough.tables.maintain`).

``cough maintain`` as a module, what ``ray job submit`` runs: the flags and the library call
are cough/commands/maintain.py's.
"""

if __name__ == "__main__":
    from cough.cli import run_module

    run_module("maintain")
