"""The ``cough`` command: one subcommand per job.

Exit codes: 0 done (bad recordings are error rows, not failures), 1 the job failed,
2 bad usage. Logs and progress go to stderr, a short summary to stdout; with ``--json``
stdout is exactly one JSON object, also when the job fails (``status``, ``exit_code``,
``error``), so a scheduler that parses it always learns the outcome.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import logging
import re
import sys

from . import __version__
from .errors import CoughError, UsageError

#: subcommand -> module with HELP, EXAMPLE, add_arguments(parser) and run(args) -> dict
#: (cough/commands/; ``python -m jobs.<job>`` runs :func:`main` with its name).
JOBS = {
    "synth": "cough.commands.synth",
    "labels": "cough.commands.labels",
    "featurize": "cough.commands.featurize",
    "train": "cough.commands.train",
    "score": "cough.commands.score",
    "report": "cough.commands.report",
    "nightly": "cough.commands.nightly",
}
#: Arguments that name files or folders (checked by :func:`cough.runtime.check_paths`).
PATH_ARGS = ("source", "shards", "pred", "out", "labels", "model", "storage", "trace_dir")
#: Lines of an unexpected error's text that tell the user what to do; kept without -v.
ADVICE = re.compile(r"\b(to fix|fix this|try|please|consider|make sure|you (can|may|should|need to|must)|"
                    r"hint|instead)\b", re.IGNORECASE)
log = logging.getLogger("cough")


class CoughParser(argparse.ArgumentParser):
    """argparse without abbreviations, whose errors reach :func:`main` (for ``--json``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})
        #: ``cough``'s parser: each job's name -> its own parser (:func:`build_parser` fills it)
        self.jobs: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str):
        raise UsageError(message, prog=self.prog, usage=self.format_usage())


def _available_jobs():
    for name, module in JOBS.items():
        try:
            yield name, importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def build_parser() -> CoughParser:
    parser = CoughParser(
        prog="cough", description="Batch processing of cough recordings on Ray.",
        epilog="exit codes: 0 done, 1 the job failed, 2 bad usage. Try 'cough <job> --help'.")
    parser.add_argument("--version", action="version", version=f"cough {__version__}")
    sub = parser.add_subparsers(dest="job", required=True, metavar="JOB")
    for name, module in _available_jobs():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP,
                           epilog=f"example:\n  {module.EXAMPLE}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(_module=module)
        module.add_arguments(p)
        parser.jobs[name] = p
        p.add_argument("--json", action="store_true",
                       help="print one JSON object on stdout: the summary, or the error (status, exit_code)")
        loud = p.add_mutually_exclusive_group()
        loud.add_argument("-v", "--verbose", action="store_true",
                          help="debug logging, Ray's and TensorFlow's logs, full error text on stderr")
        loud.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr, no progress bars")
    return parser


def _suggest(argv: list[str], jobs: list[str]) -> None:
    """A usage error naming the closest job when the first word is not one."""
    word = _job_word(argv)
    if word is None or word in jobs:
        return
    close = difflib.get_close_matches(word, jobs, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else f" (jobs: {', '.join(jobs)})"
    raise UsageError(f"unknown job '{word}'{hint}", prog="cough")


def _refuse_unknown(unknown: list[str], job_parser: argparse.ArgumentParser) -> None:
    """A usage error from the job's own parser for arguments it does not know, naming the
    closest flag of that job (argparse left them to the top-level parser, whose usage and
    name said nothing about the job)."""
    flags = [s for action in job_parser._actions for s in action.option_strings if s.startswith("--")]
    word = unknown[0].split("=", 1)[0]
    close = difflib.get_close_matches(word, flags, n=1, cutoff=0.6) if word.startswith("-") else []
    hint = f"; did you mean {close[0]}?" if close else ""
    job_parser.error(f"unrecognized argument{'s' if len(unknown) > 1 else ''}: {' '.join(unknown)}{hint}")


def _job_word(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def brief(exc: BaseException) -> str:
    """An unexpected error in a few lines: its type and first line, plus the lines of its text
    that advise a fix (Ray's "To fix this ..."). The full text needs ``-v``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    advice = [line for line in lines[1:] if ADVICE.search(line) and not line.startswith(("File ", "Traceback"))]
    return "\n".join([f"{type(exc).__name__}: {lines[0] if lines else ''}", *advice])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    want_json, verbose = "--json" in argv, bool({"-v", "--verbose"} & set(argv))
    job, summary = None, {}
    try:
        parser = build_parser()
        job_parsers = parser.jobs
        jobs = list(job_parsers)
        _suggest(argv, jobs)
        job = _job_word(argv)
        args, unknown = parser.parse_known_args(argv)
        job = args.job
        if unknown:
            _refuse_unknown(unknown, job_parsers[job])
        from .logs import setup_logging

        setup_logging(verbose=args.verbose, quiet=args.quiet, job=job)
        from .runtime import check_paths, check_ray_args

        check_paths({name: getattr(args, name) for name in PATH_ARGS if getattr(args, name, None)})
        if hasattr(args, "num_cpus"):
            check_ray_args(args.address, args.num_cpus)
        try:
            summary = args._module.run(args)
        except Exception as exc:  # out of a Ray task or actor: the cause, in one line
            from .runtime import job_error

            clean = job_error(exc)
            if clean is exc:
                raise
            raise clean from None
        code, error = 0, None
    except CoughError as exc:
        code, error, summary = exc.exit_code, str(exc), exc.summary
        if exc.usage:
            print(exc.usage.rstrip(), file=sys.stderr)
        print(f"{exc.prog or f'cough {job}'}: error: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        code, error = 130, "interrupted"
        print(f"cough {job}: interrupted", file=sys.stderr)
    except Exception as exc:  # a bug or an infrastructure failure: the gist, details under -v
        code, error = 1, str(exc) if verbose else brief(exc)
        log.debug("job failed", exc_info=True)
        print(f"cough {job}: failed: {type(exc).__name__}: {error}" if verbose else
              f"cough {job}: failed: {error}\n(rerun with -v for the full error)", file=sys.stderr)
    if want_json:
        status = {"status": "ok" if code == 0 else "error", "exit_code": code, "job": job}
        print(json.dumps({**summary, **status, **({"error": error} if code else {})}, sort_keys=True, default=str))
    elif code == 0:
        for key, value in summary.items():
            if value is not None:
                print(f"{key}: {_readable(value)}")
    return code


def _readable(value) -> str:
    """A summary value for a person: floats to 4 significant digits, yes/no, a mapping as
    ``key value, ...`` (``--json`` keeps every value whole and typed).

    >>> _readable(0.123456), _readable(True), _readable({"mp3": 30, "ogg": 14}), _readable([0.5, 0.25])
    ('0.1235', 'yes', 'mp3 30, ogg 14', '[0.5, 0.25]')
    """
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_readable(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)) and all(isinstance(v, float) for v in value):
        return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    return str(value)


def run_module(job: str) -> None:
    """Entry point for ``python -m jobs.<job>`` (what ``ray job submit`` runs)."""
    sys.exit(main([job, *sys.argv[1:]]))
