"""score: predict every recording under SOURCE with MODEL into PRED, incrementally.

``cough score`` as a module, what ``ray job submit`` runs: the flags and the library call
are cough/commands/score.py's. See docs/score.md.
"""

if __name__ == "__main__":
    from cough.cli import run_module

    run_module("score")
