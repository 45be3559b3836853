"""The content-dedupe set by hash bucket (cough.tables.scored.ScoredBuckets) gives the same
answers as the whole set it replaced, without any process holding the whole set."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from deltalake import write_deltalake

from cough.tables.listing import UNREAD
from cough.tables.pred import Pred
from cough.tables.scored import ScoredBuckets, bucket_count, scored_buckets, scored_keys
from cough.tables.storage import Location


def test_the_set_by_bucket_answers_as_the_whole_set(tmp_path, ray_local):
    rng = np.random.default_rng(0)
    ids = [rng.bytes(16).hex() for _ in range(3000)]
    for part in range(3):  # three commits: three data files, so several tasks split them
        rows = slice(part * 1000, (part + 1) * 1000)
        write_deltalake(str(tmp_path / "pred"), pa.table({
            "recording_id": [None if i % 97 == 0 else x for i, x in enumerate(ids[rows])],
            "path": [f"/a/{part}-{i}.wav" for i in range(1000)],
            "model_version": ["m1" if i % 5 else "m0" for i in range(1000)],
            # of the rows without an id, every other one a transient error (read again, not unreadable)
            "error": [None if i % 97 else f"{UNREAD}503" if i % 194 else "not audio" for i in range(1000)]}),
            mode="append")
    pred = Pred(Location.of(str(tmp_path / "pred")))
    by_bucket = scored_buckets(pred, "m1", groups=2)
    whole = scored_keys(pred.table(), "m1")
    assert isinstance(by_bucket, ScoredBuckets) and len(by_bucket.refs) == bucket_count(3000)
    queries = ids[::7] + [rng.bytes(16).hex() for _ in range(50)] + [None] * 3
    paths = [f"/a/{i % 3}-{i % 1000}.wav" for i in range(len(queries) - 3)] + ["/a/0-97.wav", "/a/0-194.wav", "/b/x.wav"]
    assert (by_bucket.has(queries, paths) == whole.has(queries, paths)).all()
    assert by_bucket.has([ids[1]], ["/elsewhere.wav"]).tolist() == [True]  # the same bytes under another name
    assert by_bucket.has([None], ["/a/0-194.wav"]).tolist() == [True]  # unreadable before, by its path
    # a transient error is read again: pending, not already scored (rows 97, 291, 679, 873 of each part)
    assert by_bucket.pending == whole.pending and "/a/0-97.wav" in by_bucket.pending and len(whole.pending) == 3 * 4
    assert by_bucket.has([None], ["/a/0-97.wav"]).tolist() == [False]
