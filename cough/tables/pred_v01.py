"""Converting a PRED of cough 0.1 (``run-*`` folders and ``_runs/`` records, no Delta log,
which :func:`cough.tables.pred.claim_pred` refuses) into a new Delta PRED."""

from __future__ import annotations

import pyarrow.parquet as pq

from ..errors import CoughError
from .delta import LOG_DIR, storage_options
from .pred import RUN_KEY, claim_pred, is_v01
from .storage import Location


def convert_v01(old: str, new: str) -> int:
    """Copy a cough 0.1 PRED (``run-*`` folders and ``_runs/`` records) into a new Delta PRED,
    one commit per committed run, oldest first, leaving ``old`` as it is; its ``group``
    column becomes ``participant``. Returns the rows."""
    from deltalake import CommitProperties, write_deltalake

    from .schema import current_names

    src = Location.of(old)
    if not is_v01(src):
        raise CoughError(f"{src.uri} is not a cough 0.1 PRED")
    dst, output = claim_pred(new, inputs={"the old PRED": src})
    records = sorted((src.join("_runs", e.base_name).read_json() for e in src.join("_runs").listdir()
                      if e.base_name.endswith(".json")), key=lambda r: r["run_id"])
    gone = {old_id for r in records for old_id in r.get("supersedes", [])}
    rows = 0
    with output.writing(LOG_DIR):
        for record in records:
            run = next((src.join(f"{p}{record['run_id']}") for p in ("run-", ".staging-")
                        if src.join(f"{p}{record['run_id']}").is_dir()), None)
            if record["run_id"] in gone or run is None:
                continue
            table, target = current_names(pq.read_table(run.path, filesystem=run.fs)), dst.table()  # group -> participant
            write_deltalake(target if target is not None else dst.table_uri, table, mode="append", schema_mode="merge",
                            storage_options=storage_options(),
                            commit_properties=CommitProperties(custom_metadata={RUN_KEY: record}))
            rows += table.num_rows
    return rows
