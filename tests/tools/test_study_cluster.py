"""A study on a Ray cluster: two 1-CPU nodes simulated on this machine (ray.cluster_utils.Cluster)."""

import pytest
from study_helpers import needs_data, ray_env, tiny_config

from deeptrain.tools.compare import compare


@needs_data
@pytest.mark.slow
def test_compare_on_a_two_node_cluster_places_trials_on_both_nodes(tmp_path, tmp_path_factory, monkeypatch):
    from ray.cluster_utils import Cluster

    monkeypatch.chdir(tmp_path)
    ray_env(monkeypatch, tmp_path_factory.mktemp("c"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        nodes = {node.node_id for node in cluster.list_all_nodes()}
        results = compare([str(tiny_config(tmp_path, "plain", max_epochs=1))], str(tmp_path / "study"), seeds=2,
                          address=cluster.address)
    finally:
        cluster.shutdown()
    assert [r["status"] for r in results] == ["ok", "ok"]
    assert {r["node"] for r in results} == nodes and len(nodes) == 2  # one 1-CPU trial on each node
