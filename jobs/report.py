"""report: evaluate PRED (the output of `cough score`) against TRUE labels and describe the run.

``cough report`` as a module, what ``ray job submit`` runs: the flags and the library call
are cough/commands/report.py's. No Ray (see docs/report.md).
"""

if __name__ == "__main__":
    from cough.cli import run_module

    run_module("report")
