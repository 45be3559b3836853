"""Operating cough: CLI help, cluster.yaml, storage URIs."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pyarrow.parquet as pq
import pytest
import yaml

from cough.cli import JOBS, build_parser

from .conftest import ROOT


def test_cluster_yaml_is_valid_for_rays_cluster_launcher():
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(fillout_defaults(config))  # what `ray up` runs before launching anything
    assert {"cpu_worker", "gpu_worker"} <= set(config["available_node_types"])
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    assert any("constraints.txt" in c for c in config["setup_commands"])
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
    broken = dict(config, available_node_types={"head": {"resources": {}, "nodeconfig": {}}})
    with pytest.raises(jsonschema.ValidationError):
        validate_config(fillout_defaults(broken))


def test_every_job_has_help_with_an_example():
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    assert {"synth", "featurize"} <= set(subcommands)
    for name, sub in subcommands.items():
        text = sub.format_help()
        assert "example:" in text and f"cough {name}" in text, name
        assert "--json" in text
    assert set(subcommands) <= set(JOBS)


def test_cough_help_exits_zero_and_lists_the_jobs():
    result = subprocess.run([sys.executable, "-m", "cough", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0
    for job in ("featurize", "synth"):
        assert job in result.stdout
    bad = subprocess.run([sys.executable, "-m", "cough", "nosuchjob"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2


def test_featurize_reads_and_writes_file_uris(tmp_path, ray_local, sample_archive):
    from cough.featurize import FeaturizeSettings, featurize

    raw = sample_archive / "raw"
    for f in sorted(raw.iterdir())[5:]:
        f.unlink()
    out = tmp_path / "out"
    summary = featurize(f"file://{raw}", f"file://{out}", FeaturizeSettings(labels=f"file://{sample_archive / 'labels.csv'}")).to_dict()
    assert summary["inputs"] == 5
    table = pq.read_table(out / "recordings")
    assert table.num_rows == 5 and all(p.startswith("file://") for p in table["path"].to_pylist())
    assert json.loads((out / "manifest.json").read_text())["inputs"] == 5
    assert table["label"].null_count == 0
