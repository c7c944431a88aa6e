"""The interim look: counts from the database, posteriors against R, keep/drop by the rules."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ductal import accounts, forms, records
from ductal.db import session_scope
from ductal.design import posterior
from ductal.errors import Conflict, ValidationError
from ductal.interim import InterimReport, InterimRules, interim
from ductal.protocols.loader import builtin_protocol
from ductal.randomisation import service
from tests.randomisation.conftest import ADAPTIVE, NI, screening

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "interim_reference.json").read_text())
ARMS = ("a_supportive", "b_prednisolone", "c_methotrexate")
# P(rate > threshold) is a closed form in R and here; P(best) is numerical integration in both
EXACT_TOL = 1e-10
INTEGRAL_TOL = 1e-5


def _follow_up(when: dt.date, response: str) -> dict[str, Any]:
    active = int(response != "cr")
    return {
        "assessment_date": when.isoformat(),
        "mass": active,
        "erythema": 0,
        "abscess": 0,
        "fistula": 0,
        "ulcer": 0,
        "skin_involvement": 0,
        "us_done": 1,
        "us_size_1_mm": 0.0 if response == "cr" else 15.0,
        "us_size_2_mm": 0.0 if response == "cr" else 10.0,
        "us_size_3_mm": 0.0 if response == "cr" else 5.0,
        "investigator_response": response,
    }


def _subject(session: Session, arm: str, visits: dict[str, str]) -> None:
    subject = records.screen(
        session,
        protocol_id=ADAPTIVE,
        site=accounts.get_site(session, "RIV"),
        screening=screening(ADAPTIVE),
        actor="coord",
        today=dt.date(2026, 11, 1),
    )
    enrolled_on = dt.date(2019, 1, 8)
    records.enrol(session, subject=subject, actor="coord", enrolled_on=enrolled_on, arm=arm)
    for event_key, response in visits.items():
        day = records.subject_protocol(subject).event(event_key).day
        forms.save_form(
            session,
            subject=subject,
            form_key="follow_up",
            data=_follow_up(enrolled_on + dt.timedelta(days=day), response),
            event_key=event_key,
            actor="investigator",
            today=dt.date(2026, 11, 1),
        )


@pytest.fixture
def trial(study: Engine) -> Engine:
    """Nine subjects per arm: eight assessed at month 12 (A 1, B 3, C 7 in CR), the ninth only
    at month 6 (in CR); some month-12 responders were not yet in CR at month 6 and one subject
    in CR at month 6 relapsed by month 12."""
    month_12_cr = {"a_supportive": 1, "b_prednisolone": 3, "c_methotrexate": 7}
    with session_scope(study) as session:
        for arm in ARMS:
            for i in range(8):
                cr = i < month_12_cr[arm]
                visits = {"month_6": "pr" if cr else "sd", "month_12": "cr" if cr else "sd"}
                if i == 7:
                    visits = {"month_6": "cr", "month_12": "pd"}  # relapsed
                _subject(session, arm, visits)
            _subject(session, arm, {"month_6": "cr"})
    return study


def _check_against_r(report: InterimReport, case: str) -> None:
    ref = REFERENCE[case]
    for i, arm in enumerate(report.arms):
        assert arm.arm == ARMS[i]
        assert (arm.responders, arm.evaluated) == (ref["x"][i], ref["n"][i])
        assert arm.open == ref["open"][i]
        assert arm.p_above_threshold == pytest.approx(ref["p_above"][i], abs=EXACT_TOL)
        assert arm.p_best == pytest.approx(ref["p_best"][i], abs=INTEGRAL_TOL)
        assert arm.posterior_a == 1 + ref["x"][i]
        assert arm.posterior_b == 1 + ref["n"][i] - ref["x"][i]


def test_month_12_complete_response_drops_the_arm_with_inadequate_response(
    trial: Engine,
) -> None:
    with session_scope(trial) as session:
        report = interim(session, protocol_id=ADAPTIVE)
    assert report.rules.assessment == "month_12" and report.rules.responders == ("cr",)
    assert (report.rules.threshold, report.rules.drop_bound) == (0.5, 0.05)
    assert [a.randomised for a in report.arms] == [9, 9, 9]
    _check_against_r(report, "interim")
    # A: P(rate > 0.5) = 0.0195 < 0.05 -> drop; B 0.254 and C 0.980 are kept
    assert [a.recommendation for a in report.arms] == ["drop", "keep", "keep"]
    assert report.arms[0].reason.startswith("inadequate response: P(rate > 0.5) = 0.0195")


def test_the_latest_follow_up_definition_counts_the_last_assessment(trial: Engine) -> None:
    with session_scope(trial) as session:
        report = interim(session, protocol_id=ADAPTIVE, assessment="latest")
    _check_against_r(report, "latest")
    # A: 2/9 gives P(rate > 0.5) = 0.0547, just above the bound: kept
    assert [a.recommendation for a in report.arms] == ["keep", "keep", "keep"]


def test_a_closed_arm_is_reported_as_dropped_and_left_out_of_p_best(trial: Engine) -> None:
    with session_scope(trial) as session:
        service.close_arm(
            session, protocol_id=ADAPTIVE, arm="a_supportive", actor="dmc", reason="look 1"
        )
        report = interim(session, protocol_id=ADAPTIVE)
    _check_against_r(report, "a_closed")
    assert report.arms[0].recommendation == "drop"
    assert report.arms[0].reason.startswith("already dropped")


def test_responder_codes_and_assessment_can_be_chosen(trial: Engine) -> None:
    with session_scope(trial) as session:
        report = interim(session, protocol_id=ADAPTIVE, assessment="month_6", responders=["cr"])
        both = interim(session, protocol_id=ADAPTIVE, assessment="month_6", responders=["cr", "pr"])
    # month 6: one relapser and the ninth subject were in CR in every arm
    assert [(a.responders, a.evaluated) for a in report.arms] == [(2, 9)] * 3
    assert [a.responders for a in both.arms] == [3, 5, 9]
    data = both.to_dict()
    assert data["rules"]["responders"] == ["cr", "pr"]
    assert [a["arm"] for a in data["arms"]] == list(ARMS)


def test_published_like_counts_agree_with_r() -> None:
    # the posterior functions the interim relies on, at the published trial's size (C 217/230)
    ref = REFERENCE["published_like"]
    x, n = np.array([ref["x"]], dtype=float), np.array([ref["n"]], dtype=float)
    above = posterior.prob_above(1 + x, 1 + n - x, ref["threshold"])[0]
    best = posterior.prob_best(1 + x, 1 + n - x, np.array([ref["open"]]))[0]
    assert above == pytest.approx(ref["p_above"], abs=EXACT_TOL)
    assert best == pytest.approx(ref["p_best"], abs=INTEGRAL_TOL)


def test_bad_requests_are_refused(study: Engine) -> None:
    with session_scope(study) as session:
        with pytest.raises(Conflict, match="not an adaptive protocol"):
            interim(session, protocol_id=NI)
        with pytest.raises(ValidationError) as info:
            interim(session, protocol_id=ADAPTIVE, assessment="screening", responders=["xx"])
    fields = [p.field for p in info.value.problems]
    assert fields == ["assessment", "responders"]


def test_missing_rules_are_named() -> None:
    protocol = builtin_protocol(ADAPTIVE)
    bare = protocol.model_copy(update={"settings": {"interim_prior_a": -1}})
    with pytest.raises(ValidationError) as info:
        InterimRules.from_protocol(bare)
    assert [p.field for p in info.value.problems] == [
        "settings.interim_prior_a",
        "settings.interim_response_threshold",
        "settings.interim_futility_probability",
    ]
