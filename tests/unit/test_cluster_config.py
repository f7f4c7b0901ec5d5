"""Issue 6, acceptance 6: cluster.yaml passes Ray's own cluster-launcher validation."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


def _load() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(CLUSTER_YAML.read_text())
    return config


def test_cluster_yaml_passes_rays_config_validation() -> None:
    config = prepare_config(_load())
    validate_config(config)
    assert set(config["available_node_types"]) == {"ray.head.default", "ray.worker.default"}
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start  # never exposed unauthenticated
    assert "--metrics-export-port" in head_start
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert "wfdag.env" in " ".join(commands)  # WFDAG_DATABASE_URL reaches every node
    assert any("pip install" in c and "~/wfdag" in c for c in config["setup_commands"])


def test_rays_validation_rejects_a_broken_copy() -> None:
    """The check above can fail: Ray refuses a config whose head type does not exist."""
    broken = copy.deepcopy(_load())
    broken["head_node_type"] = "ray.head.missing"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(broken))
