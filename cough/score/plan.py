"""``cough score --dry-run``: what a run would read, skip and write, without Ray."""

from __future__ import annotations

from ..tables.archive import EVERY_FILE, Selection
from .settings import ScorePlan


def plan(source, target, info, *, labels=None, group_pattern=None, rescore: bool = False,
         selection: Selection = EVERY_FILE) -> ScorePlan:
    """What scoring ``source`` into PRED ``target`` (a :class:`cough.tables.pred.Pred`) with the model
    ``info`` would do, without Ray: the listing and the ledger are compared on this machine,
    and the files the ledger has not seen are hashed (as a run does) to count those whose
    content this model version already scored."""
    import pyarrow.parquet as pq

    from ..audio.decode import RECORDING_BUDGET
    from ..errors import RecordingError
    from ..tables.ledger import FILE_KEY, Ledger
    from ..tables.listing import Entry
    from ..tables.scored import NOTHING_SCORED, scored_keys
    from ..audio.recording import recording_id
    from ..tables.archive import listing_table
    from ..tables.labels import load_labels
    from ..tables.shards import is_out, read_out
    from ..tables.storage import retry

    seen = excluded = 0
    warnings: list[str] = []
    label_counts: dict = {}
    if is_out(source):
        recordings = read_out(source, what="SOURCE").recordings
        rows = retry(lambda: pq.read_table(recordings.path, filesystem=recordings.fs, columns=["recording_id", "path"]),
                     what=f"read {recordings.uri}", where=recordings).to_pylist()
        ids, paths = [r["recording_id"] for r in rows], [r["path"] for r in rows]
    else:
        found = listing_table(source.uri, load_labels(labels, source.uri, group_pattern=group_pattern),
                              selection=selection)
        listing, excluded = found.rows, found.excluded
        warnings, label_counts = found.check(labels, group_pattern), found.counts.to_dict()
        ledger = None if rescore else Ledger(target).table()
        if ledger is not None:
            known = retry(lambda: ledger.to_pyarrow_table(columns=list(FILE_KEY),
                                                          filters=[("model_version", "=", info.version)]),
                          what="read the file ledger", where=target.loc)
            fresh = listing.join(known, keys=list(FILE_KEY), join_type="left anti")
            seen, listing = listing.num_rows - fresh.num_rows, fresh
        entries = [Entry.from_dict(row) for row in listing.to_pylist()]
        paths, ids = [e.path for e in entries], []
        for entry in entries:  # read and hashed as a run does (cough.score.stages.prepare_recordings)
            try:
                ids.append(recording_id(entry.read(max_bytes=RECORDING_BUDGET)))
            except RecordingError:
                ids.append(None)
    table = target.table()
    scored = NOTHING_SCORED if rescore else scored_keys(table, info.version)
    skip = int(scored.has(ids, paths).sum())
    return ScorePlan(would_list=len(paths) + seen, excluded=excluded, seen_before=seen, would_read=len(paths),
                     would_skip=skip + seen, would_score=len(paths) - skip, model_version=info.version,
                     would_write=target.loc.uri, pred_exists=table is not None, labels=label_counts,
                     warnings=warnings)
