"""The bad-input battery of benchmarks/bad_inputs.py, in-process: every case whose set-up
needs no earlier training run (numeric fields, config files, data files, output folders,
command-line flags) ends in exit 2 and one `error:` sentence, with no traceback and
nothing finished-looking left behind. The benchmark runs these and the rest (stale
results, locks, NaN, hub) each in its own process with a timeout."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_cli_bad_input import run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bad_inputs  # noqa: E402

GROUPS = {
    "numeric": bad_inputs.numeric_cases,
    "config": bad_inputs.config_cases,
    "data": bad_inputs.data_cases,
    "output": bad_inputs.output_cases,
    "cli": bad_inputs.cli_cases,
}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return bad_inputs.make_fixtures(tmp_path_factory.mktemp("battery"))


@pytest.mark.parametrize("group", list(GROUPS))
def test_every_bad_input_ends_in_one_sentence(group, fixtures, capsys, one_thread):
    cases = GROUPS[group](fixtures)
    assert cases
    failures = []
    for case in cases:
        code, out, err = run_cli(capsys, *case.argv)
        verdict, detail = bad_inputs.classify(case, code, out, err)
        if verdict != "ok":
            failures.append(f"{case.name}: {verdict}: {detail}")
    assert not failures, "\n".join(failures)


def test_the_battery_holds_at_least_150_cases(fixtures):
    fixtures = {**fixtures, "silent_port": 9}
    assert len(bad_inputs.all_cases(fixtures)) >= 150
