"""Every science claim of tests/science_claims.py on the session's course run (one execution of
each notebook, shared with nbval). benchmarks/bench_margins.py checks the same claims over seeds."""

import pytest
from science_claims import CLAIMS


@pytest.mark.parametrize("claim", CLAIMS, ids=[c.id for c in CLAIMS])
def test_claim_holds_on_the_course_run(course_metrics, claim):
    metrics = course_metrics[claim.notebook]
    if not claim.applies(metrics):
        pytest.skip(f"{claim.needs} absent: the real data was not available to the course run")
    value = claim.value(metrics)
    assert claim.holds(value), f"{claim.id}: {value:.4f} is not {claim.relation} {claim.threshold}"
