"""Tests of the routing-trace helpers of notebooks/moe_analysis.py (issue 27) on a `moe-dist route` of a
tiny run: the --h5 file read by read_route_trace against the same route's --json output, and the
per-token agreement recomputed from the experts against the mean `moe-dist route` reports.
scripts/test_notebooks.sh writes both files (NOTEBOOK_TEST_ROUTE_H5, NOTEBOOK_TEST_ROUTE_JSON).
"""
import json
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import moe_analysis as ma  # noqa: E402

H5 = os.environ.get("NOTEBOOK_TEST_ROUTE_H5")
JSON = os.environ.get("NOTEBOOK_TEST_ROUTE_JSON")


@pytest.fixture(scope="module")
def pair():
    if not H5 or not JSON:
        pytest.fail("NOTEBOOK_TEST_ROUTE_H5 and NOTEBOOK_TEST_ROUTE_JSON are not set (scripts/test_notebooks.sh sets them)")
    with open(JSON) as fh:
        return ma.read_route_trace(H5), json.load(fh)


def test_arrays_equal_the_json(pair):
    trace, ref = pair
    assert trace["tokens"].tolist() == ref["tokens"]
    assert trace["pieces"] == ref["pieces"]
    assert trace["experts"].tolist() == ref["experts"]
    np.testing.assert_allclose(trace["gates"], np.array(ref["gates"]), rtol=0, atol=1e-7)
    np.testing.assert_allclose(trace["entropy"], np.array(ref["entropy"]), rtol=0, atol=1e-6)
    assert trace["dropped"].tolist() == ref["dropped"]
    assert trace["num_experts"] == ref["num_experts"]
    R, N, k = trace["experts"].shape
    assert (R, k) == (ref["iterations"], ref["top_k"]) and N == len(ref["tokens"])
    # gates descending, entropy between 0 and ln E
    assert (np.diff(trace["gates"], axis=2) <= 1e-7).all()
    assert ((trace["entropy"] >= 0) & (trace["entropy"] <= np.log(trace["num_experts"]) + 1e-5)).all()


def test_agreement_recomputed_from_the_experts(pair):
    trace, ref = pair
    per_token = ma.trace_agreement(trace["experts"])
    assert per_token.shape == (trace["experts"].shape[0] - 1, len(ref["tokens"]))
    np.testing.assert_allclose(per_token.mean(axis=1), ref["agreement"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(trace["agreement"], ref["agreement"], rtol=0, atol=1e-12)
    # by hand for the first token: the share of iteration 0's experts that iteration 1 also picked
    e = trace["experts"]
    assert per_token[0, 0] == len(set(e[0, 0]) & set(e[1, 0])) / e.shape[2]
