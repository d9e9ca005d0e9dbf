"""The claim lines the runner prints after the table."""
from fastmi.experiments import claims


def test_each_verdict_reads_differently_and_names_the_preset():
    held = claims.claim("A beats B", "ratio 3.1", True).line()
    failed = claims.claim("A beats B", "ratio 0.9", False, shown_by="fastmi run x").line()
    unknown = claims.claim("A beats B", "ratio 1.0", None, shown_by="fastmi run x (12 min)").line()
    assert "showed up" in held and "NOT" not in held
    assert "did NOT show up" in failed and "fastmi run x" in failed
    assert "cannot be decided" in unknown and "12 min" in unknown


def test_lines_read_back_the_dicts_written_to_results_json():
    c = claims.claim("drift", "slope ratio 4.0", True)
    assert claims.lines({"claims": [c.as_dict()]}) == [c.line()]
    assert claims.lines({}) == []
