"""featurize: decode every recording under SOURCE and write Parquet shards of mel images.

``cough featurize`` as a module, what ``ray job submit`` runs: the flags and the library call
are cough/commands/featurize.py's.
"""

if __name__ == "__main__":
    from cough.cli import run_module

    run_module("featurize")
