"""What a job prints on stderr: our own log lines, progress bars in a terminal, and only
the lines of Ray, Ray Data, Ray Train and TensorFlow that a person needs.

Three levels, set by the CLI: ``quiet`` (warnings and errors only, no progress bars),
the default (our info lines, one line per training epoch, progress bars in a terminal,
Ray's and TensorFlow's chatter filtered), and ``verbose`` (everything, with timestamps).
A library caller that never calls :func:`setup_logging` gets Ray's own defaults.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys

#: Lines that every job's workers print and nobody acts on: TensorFlow's start-up banner
#: (CUDA probing on CPU machines, oneDNN, absl), Ray Train's per-report chatter
#: (its TrainingReport(...) dumps, checkpoint paths) and Ray Data's per-dataset lines.
NOISE = re.compile("|".join([
    r"^\s*$",
    r"^[IWE]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+\.cc:\d+\]",          # absl C++ log lines
    r"^WARNING: All log messages before absl::InitializeLog",
    r"^(INFO:tensorflow:)?(Enabled multi-worker collective ops|Using MirroredStrategy|Check health not enabled"
    r"|MultiWorkerMirroredStrategy with cluster_spec|Collective all_reduce|Collective batch_all_reduce)",
    r"^INFO:tensorflow:",
    r"oneDNN custom operations are on|cuda drivers|cuInit|TensorRT|^To enable the following instructions: ",
    r"^Checkpoint successfully created at|^Reporting training result \d+: TrainingReport\(",
    r"^Data size \d+ bytes exceeds the maximum broadcast size",
    r"^Requesting resources:|^Attempting to start training worker group|^Started training worker group"
    r"|^- \(ip=.*\) world_rank=",
    r"^\[\d{4}-\d\d-\d\d .*core_worker\.cc:\d+: Actor with class name: .* has constructor arguments",
    r"^Starting execution of Dataset|^Execution plan of Dataset|A new progress UI is available"
    r"|^✔️ +Dataset .* execution finished in",
    r"RayDeprecationWarning|^\s+self\.exclude_resources = exclude_resources",
    r"^Progress bars disabled\. To enable",
]))
#: Starts of Ray's log messages that :class:`_FalseAlarms` drops: a false alarm, and the
#: tracebacks Ray prints of a failed task beside the error it raises, which cough states in one
#: line (the cause, out of Ray's wrappers: cough.errors.describe; in full with -v).
FALSE_ALARMS = ("Warning: The Ray cluster currently does not have any available CPUs",
                "Unhandled error (suppress with 'RAY_IGNORE_UNHANDLED_ERRORS=1')",
                "An exception was raised from a task of operator", "Exception occurred in user code")
#: Ray Data's count of what its issue detectors found (the memory warning below), with how to
#: turn them off: nothing a cough user acts on.
ISSUES_FOUND = re.compile(r"Found \d+ issues?\. To disable issue detection")
#: Ray Data's warning that an operator's workers used more memory than they reserve, advising
#: `memory=` in a call a cough user does not write; :class:`_FalseAlarms` says it in one line.
MEMORY_WARNING = re.compile(r"Operator '(?:MapBatches\()?(?P<op>[^')]+)\)?' (?:uses|used) .*?up to\s+"
                            r"(?P<used>\d+(?:\.\d+)?\s*[KMGT]i?B)", re.S)
#: Ray's own helper actors whose output is about Ray's housekeeping (the placement-group
#: cleaner's monitor thread dies with a traceback when the State API cannot find the
#: dashboard, which a local instance does not run; the placement group goes with Ray).
QUIET_ACTORS = ("PlacementGroupCleaner",)
#: Ray Train's controller warns, over several lines (the cleaner actor's death, tab-indented
#: details), when that cleaner is gone; the warning ends with this sentence.
CLEANER_WARNING = ("Failed to register placement group with cleaner", "may not be cleaned up if controller")
#: Ray's logger that announces, on every local start, the token authentication it turns on.
TOKEN_NOTICE = "ray._private.authentication.authentication_token_setup"
#: Prefix of the lines that our code in Ray workers prints for the person at the terminal
#: (e.g. the per-epoch line); they are shown without Ray's "(pid=...)" prefix.
MARK = "cough "

_mode: str | None = None  # None (library use), "quiet", "default" or "verbose"


def setup_logging(*, verbose: bool = False, quiet: bool = False, job: str | None = None) -> None:
    """Configure stderr for a CLI run; call before Ray or TensorFlow is imported."""
    global _mode
    _mode = "verbose" if verbose else "quiet" if quiet else "default"
    handler = _Stderr()
    if verbose:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    else:
        handler.setFormatter(_Plain(f"cough {job}" if job else "cough"))
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _Stderr)] + [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("cough").setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    if not verbose:
        # Ray's notices on every start: token authentication on by default, bars off
        for name in (TOKEN_NOTICE, "ray.data._internal.progress"):
            logging.getLogger(name).setLevel(logging.ERROR)


def tensorflow_log_level() -> str:
    """``TF_CPP_MIN_LOG_LEVEL`` for this log level (:func:`cough.runtime.tensorflow_env` sets
    it): TensorFlow's C++ start-up lines (CUDA probing, oneDNN) only with ``-v`` or in library use."""
    return "3" if _mode in ("default", "quiet") else "2"


def tame_ray() -> None:
    """After ``ray.init``: Ray's and Ray Data's loggers to warnings, progress bars only where
    someone watches, and workers' output filtered (see :data:`NOISE`)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    if _mode is None:
        ctx.enable_progress_bars = True
        return
    # Bars where a person watches; elsewhere Ray Data would log its progress every few
    # seconds, and Ray Train's workers would render theirs as lines of escape codes.
    ctx.enable_progress_bars = _mode != "quiet" and sys.stderr.isatty()
    ctx.enable_operator_progress_bars = True  # one bar per stage
    if _mode == "verbose":
        _filter_worker_output()  # every line, but on stderr
        return
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logger = logging.getLogger(name)
        for handler in logger.handlers:  # the console ones; Ray's log files keep every line
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.WARNING)
                if not any(isinstance(f, _FalseAlarms) for f in handler.filters):
                    handler.addFilter(_FalseAlarms())
        if name != "ray.data":  # ray.data's own level feeds its log files
            logger.setLevel(logging.WARNING)
    _filter_worker_output()


class _FalseAlarms(logging.Filter):
    """Drops Ray's warnings that our jobs trigger in normal operation (they stay in Ray's log
    files): Ray Data warns that a dataset "will hang" when the cluster's resource view shows
    no free CPU as it starts, and that view lags behind tasks that have just ended, such as
    the score job's listing tasks, which had every CPU of a small machine."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(FALSE_ALARMS) or ISSUES_FOUND.match(message):
            return False
        memory = MEMORY_WARNING.search(message)
        if memory:  # Ray Data's many lines about memory= in a method call: one line a person can act on
            record.msg, record.args = (f"cough: {memory['op']} tasks used up to {memory['used']} of memory each, "
                                       "more than they reserve: on nodes with less memory per CPU lower "
                                       "--batch-size (long recordings), or give the nodes more memory"), ()
        return True


def worker_lines(data: dict) -> tuple[list[str], list[str]]:
    """``(ours, others)``: a batch of worker output lines (Ray's log batch: ``lines``,
    ``actor_name``, ...) split into our marked lines and the rest worth showing."""
    if _mode == "quiet" or (data.get("actor_name") or "").startswith(QUIET_ACTORS):
        return [], []
    ours, others, skipping = [], [], False
    for line in data.get("lines", []):
        if line.startswith(MARK):
            ours.append(line)
        elif skipping or CLEANER_WARNING[0] in line:
            skipping = CLEANER_WARNING[1] not in line
        elif not NOISE.search(line):
            others.append(line)
    return ours, others


def _filter_worker_output() -> None:
    """Put :func:`worker_lines` in front of Ray's printer of worker output (the driver's
    handler named ``ray_print_logs``; with -v every line passes), and send what passes to
    stderr: Ray prints a worker's stdout on the driver's stdout, where ``--json`` promises one
    object. Ray has no public hook for this; when its private one moves, the output stays
    unfiltered rather than lost."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return
    printer = next((h for name, h in dispatcher.handlers if name == "ray_print_logs"), None)
    if printer is None or getattr(printer, "filtered", False):
        return

    forward = printer

    class Filtered:
        filtered = True  # marks the handler installed, so a second call leaves it

        def __call__(self, data: dict) -> None:
            if _mode == "verbose":
                forward({**data, "is_err": True})
                return
            ours, others = worker_lines(data)
            for line in ours:
                print(line, file=sys.stderr, flush=True)
            if others:
                forward({**data, "lines": others, "is_err": True})

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", Filtered())


def ray_log_level() -> int:
    """``logging_level`` for ``ray.init``: Ray's info lines only for library callers and -v."""
    return logging.INFO if _mode in (None, "verbose") else logging.WARNING


@contextlib.contextmanager
def native_stderr_filtered():
    """While the block runs, pass what native code writes to file descriptor 2 through a
    filter that drops :data:`NOISE` and forwards every other line as it comes (not with -v,
    not for library callers). TensorFlow's start-up banner (absl: CUDA probing, oneDNN)
    ignores TF_CPP_MIN_LOG_LEVEL since TensorFlow moved to absl logging, and Ray's C++ core
    worker logs to fd 2 in the driver itself. ``sys.stderr`` meanwhile writes to the real
    stderr, so what Python code says (any thread) goes straight out and a terminal is still
    seen as one (progress bars)."""
    if _mode not in ("default", "quiet"):
        yield
        return
    import threading

    sys.stderr.flush()
    saved = os.dup(2)
    out = os.dup(saved)  # the forwarder's own: it may outlive the block (below)
    read, write = os.pipe()
    forwarder = threading.Thread(target=_forward_lines, args=(read, out), name="cough-native-stderr", daemon=True)
    forwarder.start()
    previous = sys.stderr
    with open(saved, "w", buffering=1, encoding=previous.encoding, errors=previous.errors, closefd=False) as real:
        os.dup2(write, 2)
        os.close(write)
        sys.stderr = real
        try:
            yield
        finally:
            sys.stderr = previous
            real.flush()
            previous.flush()  # what went through the old object (fd 2) is filtered too
            os.dup2(saved, 2)  # the pipe's last writer in this process: the forwarder sees its end
            os.close(saved)
            # A child process started in the block keeps the pipe open; the forwarder then
            # goes on filtering its lines for as long as it lives.
            forwarder.join(timeout=1)


def _forward_lines(read: int, out: int) -> None:
    """Copy the lines coming through ``read`` that are not :data:`NOISE` to ``out``. It
    drains ``read`` to its end even when ``out`` fails (stderr a closed pipe, as in
    ``cough score ... 2>&1 | head``): a full pipe would block whoever writes to fd 2."""
    with open(read, "rb") as lines, open(out, "wb", buffering=0) as stderr:
        for line in lines:
            if not NOISE.search(line.decode(errors="replace")):
                with contextlib.suppress(OSError):
                    stderr.write(line)


def say(message: str) -> None:
    """A line for the person at the terminal from inside a Ray worker (shown by the
    driver without Ray's prefix; hidden with ``--quiet``). Written, not printed: Ray
    Train's workers tee ``print`` into a logger as well, which would show it twice."""
    sys.stdout.write(f"{MARK}{message}\n")
    sys.stdout.flush()


class _Stderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a record comes."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


class _Plain(logging.Formatter):
    """``cough <job>: message`` (other libraries' records: ``<logger>: message``);
    warnings and errors say so."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        prefix = self.prefix if record.name.split(".")[0] == "cough" else record.name
        text = f"{prefix}: {level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text
