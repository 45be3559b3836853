"""train: fit a CNN on featurize shards with Ray Train and write MODEL/.

``cough train`` as a module, what ``ray job submit`` runs: the flags and the library call
are cough/commands/train.py's.
"""

if __name__ == "__main__":
    from cough.cli import run_module

    run_module("train")
