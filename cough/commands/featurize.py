"""``cough featurize``'s command line: its flags (:data:`HELP`, :data:`EXAMPLE`,
:func:`add_arguments`) and :func:`run`, which calls :func:`cough.featurize.job.featurize` with them.
cough/cli.py builds the parser from them; ``python -m jobs.featurize`` runs the same."""

from __future__ import annotations

from ..audio.detector import RECORDING_THRESHOLD
from ..audio.features import DEFAULT_PARAMS, MAX_WINDOW_S, WINDOWINGS, FeaturizerParams
from ..featurize.job import featurize
from ..featurize.settings import FeaturizeSettings
from ..flags import integer, number
from ..runtime import add_ray_arguments
from ..tables.archive import Selection

HELP = "decode recordings and write mel-spectrogram image shards (Parquet)"
EXAMPLE = "cough featurize data/sample/raw --labels data/sample/labels.csv --out out/features"


def add_selection_arguments(p) -> None:
    """--include/--exclude, spelled the same for featurize, score and nightly."""
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="read only files whose path relative to SOURCE matches (repeatable; '*' stays within a "
                        "folder, '**' crosses folders, a pattern without '/' matches the file name): "
                        "--include '*/cough-*.wav' for a tree of participant folders")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="leave out files whose path relative to SOURCE matches (repeatable; as --include); "
                        "counted as `excluded`")


def add_cough_arguments(p, *, default: str) -> None:
    """--min-cough-probability, for featurize and score alike (one rule: cough.audio.recording.no_cough)."""
    p.add_argument("--min-cough-probability", type=number(at_least=0, at_most=1),
                   help="recordings the cough detector gives a lower probability of holding a cough are "
                        f"`rejected` rows with the reason, never featurized, trained on or scored ({default}; "
                        "0 keeps every decodable recording)")


def add_error_rate_argument(p, *, default: float | None, what: str) -> None:
    """--max-error-rate, for featurize, score and nightly alike."""
    p.add_argument("--max-error-rate", type=number(at_least=0, at_most=1), default=default, metavar="SHARE",
                   help=f"exit 1 when more than this share of {what} fail (error rows), after committing what was "
                        f"done; the summary still goes to stdout (default {default if default is not None else 'no limit'}; "
                        "a run in which every file fails exits 1 whatever this says)")


def selection(args) -> Selection:
    return Selection(include=tuple(args.include), exclude=tuple(args.exclude))


def add_arguments(p) -> None:
    p.add_argument("source", metavar="SOURCE", help="directory of recordings (searched recursively) or URI")
    p.add_argument("--out", required=True,
                   help="output folder (images/, recordings/, events/, manifest.json): new, empty, or an earlier "
                        "`cough featurize` output, which this run replaces when it commits; anything else is refused")
    p.add_argument("--labels", help="CSV with filename,label[,participant,...]")
    p.add_argument("--group-pattern", help="regex on the file stem; its first group is the participant")
    p.add_argument("--window-s", type=number(at_least=DEFAULT_PARAMS.min_tail_s, at_most=MAX_WINDOW_S, unit="seconds"),
                   default=DEFAULT_PARAMS.window_s, help="seconds per image (default 2.0)")
    p.add_argument("--windowing", choices=WINDOWINGS, default=DEFAULT_PARAMS.windowing,
                   help="where windows are cut: from the start of each recording (the seed's way), centred on "
                        "its energy events, or centred on the coughs the detector finds (default "
                        f"{DEFAULT_PARAMS.windowing}; see docs/results.md)")
    p.add_argument("--bandwidth-hz", type=number(at_least=500, at_most=DEFAULT_PARAMS.sample_rate / 2, unit="Hz"),
                   help="band-limit every recording to this many Hz before the mel transform, so that the "
                        "recording channel's bandwidth cannot show in the images (e.g. 4000 for archives that "
                        "mix 8 kHz phone lines with wideband apps; default: off)")
    add_cough_arguments(p, default=f"default {RECORDING_THRESHOLD:g}")
    add_selection_arguments(p)
    p.add_argument("--batch-size", type=integer(at_least=1), default=64, help="recordings per shard (default 64)")
    add_error_rate_argument(p, default=None, what="the files read")
    p.add_argument("--dry-run", action="store_true",
                   help="say what would be read and written, and stop (no Ray, nothing written)")
    add_ray_arguments(p)


def run(args) -> dict:
    params = FeaturizerParams(window_s=args.window_s, hop_s=args.window_s, windowing=args.windowing,
                              bandwidth_hz=args.bandwidth_hz)
    cough = RECORDING_THRESHOLD if args.min_cough_probability is None else args.min_cough_probability
    settings = FeaturizeSettings(labels=args.labels, group_pattern=args.group_pattern, params=params,
                                 selection=selection(args), min_cough_probability=cough, batch_size=args.batch_size,
                                 max_error_rate=args.max_error_rate, address=args.address, num_cpus=args.num_cpus,
                                 shared_paths=tuple(args.shared_path))
    return featurize(args.source, args.out, settings, dry_run=args.dry_run).to_dict()
