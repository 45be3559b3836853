"""Node loss on a multi-node Ray cluster on one machine (ray.cluster_utils.Cluster): a worker
node is removed (killed, not drained) in the middle of featurize and of score; the job
finishes and every input is in its output exactly once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
from deltalake import DeltaTable

from cough.score.settings import ScoreSettings
from cough.tables.storage import OWNER_FILE

from .conftest import SAMPLE
from .cluster import three_nodes
from .helpers import write_model

N_FILES = len([p for p in (SAMPLE / "raw").iterdir() if p.is_file()])



class NodeKiller(threading.Thread):
    """Removes ``node`` from ``cluster`` as soon as ``progress()`` is true."""

    def __init__(self, cluster, node, progress, timeout: float = 300):
        super().__init__(daemon=True)
        self.cluster, self.node, self.progress, self.timeout = cluster, node, progress, timeout
        self.removed_at = None

    def run(self):
        deadline = time.time() + self.timeout
        while time.time() < deadline and not self.progress():
            time.sleep(0.05)
        self.cluster.remove_node(self.node, allow_graceful=False)
        self.removed_at = time.time()


def test_featurize_survives_losing_a_worker_node(tmp_path, fresh_ray):
    from cough.featurize import FeaturizeSettings, featurize

    out = tmp_path / "out"
    with three_nodes() as (cluster, workers):
        killer = NodeKiller(cluster, workers[1], lambda: any(out.glob("recordings/*/*.parquet")))
        killer.start()
        summary = featurize(str(SAMPLE / "raw"), str(out), FeaturizeSettings(labels=str(SAMPLE / "labels.csv"), batch_size=2,
                                                                           shared_paths=(str(SAMPLE), str(tmp_path)))).to_dict()
        finished = time.time()
        killer.join()
    assert killer.removed_at is not None and killer.removed_at < finished, "the node was not lost mid-run"
    recordings = pq.read_table(out / "recordings").to_pandas()
    images = pq.read_table(out / "images", columns=["path", "window_index"]).to_pandas()
    assert summary["inputs"] == N_FILES == len(recordings) and recordings.path.is_unique
    assert not images.duplicated().any() and len(images) == recordings.n_windows.sum() == summary["images"]


def test_score_survives_losing_a_worker_node(tmp_path, fresh_ray):
    from cough.score import score

    model = write_model(tmp_path / "model")
    pred = tmp_path / "pred"
    with three_nodes() as (cluster, workers):
        killer = NodeKiller(cluster, workers[1], lambda: (pred / OWNER_FILE).exists())  # the run has begun
        killer.start()
        summary = score(str(SAMPLE / "raw"), str(model), str(pred), ScoreSettings(
            labels=str(SAMPLE / "labels.csv"), batch_size=2, actors=2, actor_cpus=0.5,
            shared_paths=(str(SAMPLE), str(tmp_path)))).to_dict()  # three nodes, one machine: one disk
        finished = time.time()
        killer.join()
    assert killer.removed_at is not None and killer.removed_at < finished, "the node was not lost mid-run"
    rows = DeltaTable(str(pred)).to_pandas()
    assert summary["scored"] == N_FILES == len(rows) and rows.path.is_unique
    # no error: every file scored, or rejected by the cough detector (one of the sample's), never lost to the node
    assert (rows.status != "error").all() and (rows.score.notna() == (rows.status == "ok")).all()
    assert sorted(Path(p).name for p in rows.path) == sorted(p.name for p in (SAMPLE / "raw").iterdir())
