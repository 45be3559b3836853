"""labels: build a labels CSV from an archive's sidecar files (see :mod:`cough.sidecars`).

``cough labels`` as a module, what ``ray job submit`` runs: the flags and the library call
are cough/commands/labels.py's.
"""

if __name__ == "__main__":
    from cough.cli import run_module

    run_module("labels")
