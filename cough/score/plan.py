"""``cough score --dry-run``: what a run would read, skip and write, without Ray."""

from __future__ import annotations


def plan(source, target, info, *, labels=None, group_pattern=None, rescore: bool = False) -> dict:
    """What scoring ``source`` into PRED ``target`` (a :class:`cough.tables.pred.Pred`) with the model
    ``info`` would do, without Ray: the listing and the ledger are compared on this machine,
    and the files the ledger has not seen are hashed (as a run does) to count those whose
    content this model version already scored."""
    import pyarrow.parquet as pq

    from ..audio.decode import RECORDING_BUDGET
    from ..errors import RecordingError
    from ..tables.ledger import FILE_KEY, Ledger
    from ..tables.listing import Entry
    from ..tables.pred import NOTHING_SCORED, scored_keys
    from ..audio.recording import recording_id
    from ..tables.shards import is_out, read_out

    seen = 0
    if is_out(source):
        recordings = read_out(source, what="SOURCE").recordings
        rows = pq.read_table(recordings.path, filesystem=recordings.fs, columns=["recording_id", "path"]).to_pylist()
        ids, paths = [r["recording_id"] for r in rows], [r["path"] for r in rows]
    else:
        from ..featurize.job import recordings_frame

        entries = recordings_frame(source.uri, labels, group_pattern)[0].to_dict("records")
        ledger = None if rescore else Ledger(target).table()
        if ledger is not None:
            known = set(map(tuple, ledger.to_pyarrow_table(columns=list(FILE_KEY), filters=[
                ("model_version", "=", info.version)]).to_pandas().itertuples(index=False)))
            versions = (Entry.from_dict(e) for e in entries)
            fresh = [e for e, v in zip(entries, versions) if (v.path, v.file_size, v.file_mtime_ns) not in known]
            seen, entries = len(entries) - len(fresh), fresh
        paths, ids = [e["path"] for e in entries], []
        for entry in entries:  # read and hashed as a run does (cough.score.stages.prepare_recordings)
            try:
                ids.append(recording_id(Entry.from_dict(entry).read(max_bytes=RECORDING_BUDGET)))
            except RecordingError:
                ids.append(None)
    table = target.table()
    scored = NOTHING_SCORED if rescore else scored_keys(table, info.version)
    known_ids = scored.has_ids([i or "" for i in ids])
    skip = sum(bool(k) if i else p in scored.unreadable for i, p, k in zip(ids, paths, known_ids))
    return {"dry_run": True, "would_list": len(paths) + seen, "seen_before": seen, "would_read": len(paths),
            "would_skip": int(skip) + seen, "would_score": len(paths) - int(skip),
            "model_version": info.version, "would_write": target.loc.uri, "pred_exists": table is not None}
