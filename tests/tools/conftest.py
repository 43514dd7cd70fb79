"""Fixtures of the study tests (compare, tune): one local Ray per module."""

import pytest
from study_helpers import ray_env

from deeptrain.tools.study import ray_session


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local 2-CPU Ray for a module's studies (compare and tune use a Ray they find running)."""
    with pytest.MonkeyPatch.context() as mp:
        ray_env(mp, tmp_path_factory.mktemp("r"))
        with ray_session(num_cpus=2):
            yield
