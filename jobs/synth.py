"""synth: write a labelled synthetic cough archive (see :mod:`cough.synth`).

``cough synth`` as a module, what ``ray job submit`` runs: the flags and the library call
are cough/commands/synth.py's.
"""

if __name__ == "__main__":
    from cough.cli import run_module

    run_module("synth")
