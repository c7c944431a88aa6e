"""De-identification: hashing, date shifting, free text and identifier fields, the summary."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from ductal.exchange.deidentify import Deidentifier, DeidOptions
from ductal.exchange.study_data import FormData, SubjectData
from ductal.protocols.loader import builtin_protocol
from ductal.protocols.model import Protocol


def _protocol_with_identifier() -> Protocol:
    protocol = builtin_protocol("lavage-observational")
    definition = protocol.model_dump(mode="json")
    rescue = next(f for f in definition["forms"] if f["key"] == "adverse_event")
    rescue["fields"].append(
        {
            "key": "reporter_phone",
            "type": "text",
            "label": {"en": "Reporter phone"},
            "identifier": True,
        }
    )
    return Protocol.model_validate(definition)


def _subject(study_id: str = "LAV-0001") -> SubjectData:
    return SubjectData(
        study_id=study_id,
        site="RIV",
        status="withdrawn",
        arm="lavage",
        status_reason="moved to Xiamen",
        screened_on="2018-01-02",
        enrolled_on="2018-01-05",
        forms=[
            FormData("baseline", "baseline", {"assessment_date": "2018-01-05", "side": "left"}),
            FormData(
                "unscheduled",
                "adverse_event",
                {
                    "term": "rash seen by Dr Wang",
                    "onset_date": "2018-02-01",
                    "resolved_date": "2018-02-11",
                    "reporter_phone": "+00 555 1234",
                },
            ),
        ],
    )


def _days(a: str, b: str) -> int:
    return (dt.date.fromisoformat(b) - dt.date.fromisoformat(a)).days


def test_default_is_pseudonymous_and_drops_identifier_fields() -> None:
    deid = Deidentifier(_protocol_with_identifier(), rng=np.random.default_rng(1))
    out = deid.apply(_subject())
    assert out.study_id == "LAV-0001"
    assert "reporter_phone" not in out.forms[1].data
    assert out.forms[1].data["term"] == "rash seen by Dr Wang"  # free text kept by default
    assert out.forms[0].data["assessment_date"] == "2018-01-05"
    summary = deid.summary()
    assert summary["identifier_fields_in_protocol"] == ["adverse_event.reporter_phone"]
    assert summary["dropped_fields"] == ["adverse_event.reporter_phone"]
    assert "never read" in summary["direct_identifiers"]


def test_hashing_is_keyed_by_the_per_export_salt() -> None:
    protocol = builtin_protocol("lavage-observational")
    options = DeidOptions(hash_ids=True)
    a = Deidentifier(protocol, options, salt=b"a" * 32)
    b = Deidentifier(protocol, options, salt=b"b" * 32)
    assert a.pseudonym("LAV-0001") == a.pseudonym("LAV-0001")
    assert a.pseudonym("LAV-0001") != a.pseudonym("LAV-0002")
    assert a.pseudonym("LAV-0001") != b.pseudonym("LAV-0001")
    assert a.pseudonym("LAV-0001").startswith("H") and len(a.pseudonym("LAV-0001")) == 16
    # without a given salt each export draws its own
    c, d = Deidentifier(protocol, options), Deidentifier(protocol, options)
    assert c.pseudonym("LAV-0001") != d.pseudonym("LAV-0001")
    assert "salt" not in str(c.summary()).replace("per-export salt that is not stored", "")


def test_dates_move_together_and_keep_every_interval() -> None:
    protocol = builtin_protocol("lavage-observational")
    deid = Deidentifier(
        protocol, DeidOptions(shift_dates=True, max_shift_days=30), rng=np.random.default_rng(7)
    )
    original = _subject()
    offsets = set()
    for _ in range(50):
        out = deid.apply(original)
        offset = _days(original.screened_on or "", out.screened_on or "")
        assert 1 <= abs(offset) <= 30
        offsets.add(offset)
        assert _days(original.enrolled_on or "", out.enrolled_on or "") == offset
        ae = out.forms[1].data
        assert _days("2018-02-01", ae["onset_date"]) == offset
        assert _days(ae["onset_date"], ae["resolved_date"]) == 10
        assert _days("2018-01-05", out.forms[0].data["assessment_date"]) == offset
    assert len(offsets) > 10 and any(o < 0 for o in offsets) and any(o > 0 for o in offsets)
    assert original.forms[1].data["onset_date"] == "2018-02-01"  # the input is not changed


def test_free_text_is_dropped_on_request() -> None:
    deid = Deidentifier(_protocol_with_identifier(), DeidOptions(drop_free_text=True))
    out = deid.apply(_subject())
    assert "term" not in out.forms[1].data and out.status_reason is None
    assert out.forms[0].data["side"] == "left"  # coded answers stay
    assert "subject.status_reason" in deid.summary()["dropped_fields"]


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="max_shift_days"):
        DeidOptions(max_shift_days=0)
