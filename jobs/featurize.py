"""featurize: decode every recording under SOURCE and write Parquet shards of mel images.

Driver: check OUT (new, empty, or an earlier featurize output), list the archive, attach
labels, map batches of recordings through :func:`cough.shards.featurize_batch` (which
writes shards under a new version folder), sum the per-batch counts, and commit by
writing the manifest last; then delete the version it replaced (cough/shards.py).
"""

from __future__ import annotations

import datetime as dt
import logging

from cough import __version__
from cough.errors import CoughError, UsageError
from cough.features import DEFAULT_PARAMS, MAX_WINDOW_S, WINDOWINGS, FeaturizerParams
from cough.flags import integer, number
from cough.runtime import add_ray_arguments

HELP = "decode recordings and write mel-spectrogram image shards (Parquet)"
EXAMPLE = "cough featurize data/sample/raw --labels data/sample/labels.csv --out out/features"
log = logging.getLogger("cough.featurize")


def add_arguments(p) -> None:
    p.add_argument("source", metavar="SOURCE", help="directory of recordings (searched recursively) or URI")
    p.add_argument("--out", required=True,
                   help="output folder (images/, recordings/, manifest.json): new, empty, or an earlier "
                        "`cough featurize` output, which this run replaces when it commits; anything else is refused")
    p.add_argument("--labels", help="CSV with filename,label[,participant,...]")
    p.add_argument("--group-pattern", help="regex on the file stem; its first group is the participant")
    p.add_argument("--window-s", type=number(at_least=DEFAULT_PARAMS.min_tail_s, at_most=MAX_WINDOW_S, unit="seconds"),
                   default=DEFAULT_PARAMS.window_s, help="seconds per image (default 2.0)")
    p.add_argument("--windowing", choices=WINDOWINGS, default=DEFAULT_PARAMS.windowing,
                   help="where windows are cut: from the start of each recording (the seed's way) or centred on "
                        "its cough events (default start; see docs/results.md)")
    p.add_argument("--bandwidth-hz", type=number(at_least=500, at_most=DEFAULT_PARAMS.sample_rate / 2, unit="Hz"),
                   help="band-limit every recording to this many Hz before the mel transform, so that the "
                        "recording channel's bandwidth cannot show in the images (e.g. 4000 for archives that "
                        "mix 8 kHz phone lines with wideband apps; default: off)")
    p.add_argument("--batch-size", type=integer(at_least=1), default=64, help="recordings per shard (default 64)")
    p.add_argument("--dry-run", action="store_true",
                   help="say what would be read and written, and stop (no Ray, nothing written)")
    add_ray_arguments(p)


def recordings_frame(source: str, labels: str | None, group_pattern: str | None):
    """The archive as a DataFrame, one row per entry the listing saw: path, problem, open_as
    (:class:`cough.listing.Entry`), label, participant and metadata columns."""
    import pandas as pd

    from cough.labels import load_labels
    from cough.listing import ENTRY_COLUMNS, list_recordings

    index = load_labels(labels, source, group_pattern=group_pattern)
    rows = [{**e.to_dict(), **index.lookup(e.path)} for e in list_recordings(source)]
    frame = pd.DataFrame(rows, columns=["path", *ENTRY_COLUMNS, "label", "participant", *index.metadata_columns])
    frame["label"] = frame["label"].astype("Int8")
    return frame, index.metadata_columns


def plan(frame, output) -> dict:
    """What featurizing ``frame`` (see :func:`recordings_frame`) into ``output`` (what
    :func:`cough.storage.claim` gave) would do."""
    import os

    return {"dry_run": True, "would_read": len(frame),
            "formats": frame["path"].map(lambda p: os.path.splitext(p)[1].lstrip(".").lower() or "none")
                                   .value_counts().sort_index().to_dict(),
            "labelled": int(frame["label"].notna().sum()), "participants": int(frame["participant"].nunique()),
            "would_write": output.loc.uri, "would_replace": output.state == "ours"}


def featurize(source: str, out: str, *, labels=None, group_pattern=None,
              params: FeaturizerParams = DEFAULT_PARAMS, batch_size: int = 64,
              address: str | None = None, num_cpus: int | None = None, dry_run: bool = False) -> dict:
    """Featurize every recording under ``source`` into ``out``; readers of ``out`` see the
    previous complete output until this one commits.

    Joins Ray at ``address`` or starts a local instance, unless Ray is already up.
    ``dry_run``: only :func:`plan`.
    """
    from cough.audio import TASK_MEMORY
    from cough.runtime import archive_dataset, init_ray
    from cough.schema import JSON_SCHEMA_VERSION
    from cough.shards import COUNTS, KIND, MANIFEST_FILE, TABLES, featurize_batch
    from cough.storage import Location, claim, new_version, remove_stale

    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    source_loc = Location.of(source)
    output = claim(out, KIND, inputs={"SOURCE": source_loc})
    frame, metadata_columns = recordings_frame(source_loc.uri, labels, group_pattern)
    if frame.empty:
        raise CoughError(f"SOURCE {source_loc.uri} holds no recordings")
    if dry_run:
        return plan(frame, output)
    labels_uri = Location.of(labels).uri if labels else None
    init_ray(address, num_cpus=num_cpus)
    log.info("featurizing %d recordings from %s", len(frame), source_loc.uri)
    version = new_version()
    with output.writing(MANIFEST_FILE) as loc:
        ds, batch_size = archive_dataset(frame, batch_size)
        folders = {t: loc.join(t, version) for t in TABLES}
        counts = ds.map_batches(featurize_batch, batch_size=batch_size, batch_format="pyarrow", memory=TASK_MEMORY,
                                fn_kwargs={**folders, "params": params, "metadata_columns": metadata_columns})
        totals = dict.fromkeys(COUNTS, 0)
        for batch in counts.iter_batches(batch_size=None, batch_format="pyarrow"):
            for key in totals:
                totals[key] += sum(batch.column(key).to_pylist())
        if totals["inputs"] != len(frame):
            raise CoughError(f"lost recordings: {len(frame)} listed, {totals['inputs']} processed")
        manifest = {"schema_version": JSON_SCHEMA_VERSION, **totals, "kind": KIND, "version": version,
                    "tables": {t: f"{t}/{version}" for t in TABLES},
                    "source": source_loc.uri, "labels": labels_uri, "group_pattern": group_pattern,
                    "featurizer": params.to_dict(), "featurizer_version": params.version,
                    "metadata_columns": metadata_columns, "cough_version": __version__,
                    "created_at": dt.datetime.now(dt.timezone.utc).isoformat()}
        loc.join(MANIFEST_FILE).write_json(manifest)  # the commit point
    for table in TABLES:  # the version this run replaced, and any a crashed run left
        remove_stale(loc.join(table), {version})
    if totals["errors"]:
        log.warning("%d of %d recordings could not be featurized; their reasons are in %s/recordings "
                    "(status == 'error')", totals["errors"], totals["inputs"], out)
    return {**totals, "out": out, "featurizer_version": params.version}


def run(args) -> dict:
    params = FeaturizerParams(window_s=args.window_s, hop_s=args.window_s, windowing=args.windowing,
                              bandwidth_hz=args.bandwidth_hz)
    return featurize(args.source, args.out, labels=args.labels, group_pattern=args.group_pattern,
                     params=params, batch_size=args.batch_size, address=args.address,
                     num_cpus=args.num_cpus, dry_run=args.dry_run)


if __name__ == "__main__":
    from cough.cli import run_module

    run_module("featurize")
