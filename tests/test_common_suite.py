"""Every registered detector passes the common checks (contract, determinism, save/load, order, errors, toy AUROC)."""

import pytest

import oodlens.fusion  # noqa: F401  registers "fused" (detectors/ does not import the layer above it)
from oodlens.detectors import available_detectors, create
from oodlens.testing import check_detector, make_toy_problem


@pytest.fixture(scope="module")
def toy():
    return make_toy_problem()


@pytest.mark.parametrize("name", available_detectors())
def test_common_suite(name, toy):
    check_detector(create(name), toy)
