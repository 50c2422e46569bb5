"""core.training.distributed without TensorFlow: who is the chief, and where each worker's checkpoints live."""

from __future__ import annotations

import json

import pytest

from core.config import preset
from core.training.distributed import checkpoint_folder, cluster_role


def _tf_config(monkeypatch, cluster: dict, kind: str, index: int) -> None:
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}}))


def test_without_tf_config_this_process_is_the_chief_of_one(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster_role() == (True, 0, 1)


@pytest.mark.parametrize("cluster, kind, index, expected", [
    ({"worker": ["a:1", "b:2"]}, "worker", 0, (True, 0, 2)),
    ({"worker": ["a:1", "b:2"]}, "worker", 1, (False, 1, 2)),
    ({"chief": ["c:0"], "worker": ["a:1", "b:2"]}, "chief", 0, (True, 0, 3)),
    ({"chief": ["c:0"], "worker": ["a:1", "b:2"]}, "worker", 0, (False, 1, 3)),
])
def test_the_chief_is_the_chief_task_else_worker_0(monkeypatch, cluster, kind, index, expected):
    _tf_config(monkeypatch, cluster, kind, index)
    assert cluster_role() == expected


def test_a_tf_config_that_is_not_json_is_refused(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{worker: 0")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        cluster_role()


def test_the_same_command_finds_the_same_checkpoints_and_workers_do_not_share_them(monkeypatch, tmp_path):
    cluster = {"worker": ["a:1", "b:2"]}
    _tf_config(monkeypatch, cluster, "worker", 0)
    chief = checkpoint_folder(tmp_path, tmp_path / "films", preset("paper"))
    assert chief == checkpoint_folder(tmp_path, tmp_path / "films", preset("paper"))
    assert chief != checkpoint_folder(tmp_path, tmp_path / "films", preset("paper", epochs=6))
    _tf_config(monkeypatch, cluster, "worker", 1)
    worker = checkpoint_folder(tmp_path, tmp_path / "films", preset("paper"))
    assert worker.parent == chief.parent and worker != chief
