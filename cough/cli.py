"""The ``cough`` command: one subcommand per job.

Exit codes: 0 done (bad recordings are error rows, not failures), 1 the job failed,
2 bad usage. Logs and progress go to stderr, a short summary to stdout (``--json``
for schedulers).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from .errors import CoughError

#: subcommand -> module with HELP, EXAMPLE, add_arguments(parser) and run(args) -> dict.
JOBS = {
    "synth": "cough.synth",
    "featurize": "jobs.featurize",
    "train": "jobs.train",
    "score": "jobs.score",
    "report": "jobs.report",
    "nightly": "jobs.nightly",
}


def _available_jobs():
    for name, module in JOBS.items():
        try:
            yield name, importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cough", description="Batch processing of cough recordings on Ray.",
        epilog="exit codes: 0 done, 1 the job failed, 2 bad usage. Try 'cough <job> --help'.")
    sub = parser.add_subparsers(dest="job", required=True, metavar="JOB")
    for name, module in _available_jobs():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP,
                           epilog=f"example:\n  {module.EXAMPLE}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(_module=module)
        module.add_arguments(p)
        p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return parser


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags every Ray job takes, spelled the same everywhere."""
    from .flags import integer

    parser.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else the instance `ray start` runs on this machine, else a new local one); 'local': always a new local one")
    parser.add_argument("--num-cpus", type=integer(at_least=1), help="CPUs of the local Ray instance cough starts (default: all); not with --address")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if hasattr(args, "num_cpus"):
            from .runtime import check_ray_args

            check_ray_args(args.address, args.num_cpus)
        summary = args._module.run(args)
    except CoughError as exc:
        print(f"cough {args.job}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug or an infrastructure failure: one line, details under -v
        logging.getLogger("cough").debug("job failed", exc_info=True)
        print(f"cough {args.job}: failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
              f" (rerun with -v for details)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cough {args.job}: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(summary, sort_keys=True, default=str))
    else:
        for key, value in summary.items():
            print(f"{key}: {value}")
    return 0


def run_module(job: str) -> None:
    """Entry point for ``python -m jobs.<job>`` (what ``ray job submit`` runs)."""
    sys.exit(main([job, *sys.argv[1:]]))
