"""Fuzzing the inputs that reach the database: importers end to end, protocol YAML, form data.

The parsers have their own hypothesis tests (tests/exchange, tests/protocols: REDCap dictionary
and records, ODM, the rule language); these go further, through the database: whatever the input,
only a domain error (one clear line) may come out, a refused import leaves the database exactly
as it was, and the audit chain still verifies. ``DUCTAL_FUZZ_EXAMPLES`` raises the example count
for the longer run (docs/validation.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from ductal import audit, forms, records
from ductal.db import make_engine, migrate, session_scope
from ductal.errors import DuctalError
from ductal.protocols.loader import builtin_protocol, parse_protocol
from tests.trust.conftest import build_study
from tests.trust.test_backup import all_rows

EXAMPLES = int(os.environ.get("DUCTAL_FUZZ_EXAMPLES", "25"))
PROTOCOLS = Path(__file__).resolve().parents[2] / "src" / "ductal" / "protocols" / "builtin"
JUNK = ["", "x", "-1", "1e999", "2018-13-45", "\x00", '"', ",", "\n", "'", "{", "]", ": ", "  - "]

edits = st.lists(
    st.tuples(st.integers(0, 10**6), st.integers(0, 60), st.sampled_from(JUNK)),
    min_size=1,
    max_size=5,
)


def _mutate(text: str, cuts: list[tuple[int, int, str]]) -> str:
    for start, length, junk in cuts:
        start %= max(len(text), 1)
        text = text[:start] + junk + text[start + length :]
    return text


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(cuts=edits)
def test_mutated_protocol_yaml_is_refused_plainly(cuts: list[tuple[int, int, str]]) -> None:
    text = (PROTOCOLS / "lavage-observational.yaml").read_text()
    try:
        parse_protocol(_mutate(text, cuts), source="fuzz.yaml")
    except DuctalError as exc:
        assert exc.message  # one clear line, with problems naming where
        assert "Traceback" not in "\n".join(exc.lines())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, str, str]:
    """A migrated database with a study, and its REDCap export (dictionary, records)."""
    api = pytest.importorskip("ductal.exchange.api")
    folder = tmp_path_factory.mktemp("fuzz-import")
    engine = make_engine(f"sqlite:///{folder / 'fuzz.sqlite'}")
    migrate(engine)
    build_study(engine, Fernet.generate_key().decode(), n_subjects=2)
    with session_scope(engine) as session:
        api.export_redcap(
            session,
            protocol_id="lavage-observational",
            out=folder / "redcap",
            rng=np.random.default_rng(1),
        )
    dictionary = (folder / "redcap" / "data_dictionary.csv").read_text()
    rows = (folder / "redcap" / "records.csv").read_text()
    return engine, dictionary, rows


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(cuts=edits, which=st.sampled_from(["records", "dictionary"]))
def test_mutated_import_is_atomic(
    exported: tuple[Engine, str, str], cuts: list[tuple[int, int, str]], which: str
) -> None:
    from ductal.exchange import api

    engine, dictionary, rows = exported
    before = all_rows(engine)
    try:
        with session_scope(engine) as session:
            if which == "records":
                api.import_redcap(
                    session,
                    actor="fuzz",
                    records_csv=_mutate(rows, cuts),
                    protocol_id="lavage-observational",
                    default_site="RIV",
                )
            else:
                api.import_redcap(
                    session,
                    actor="fuzz",
                    dictionary=_mutate(dictionary, cuts),
                    protocol_id=f"fuzz-{abs(hash(tuple(cuts))) % 10**8}",
                )
            raise _Undo  # keep the database the same for the next example
    except _Undo:
        pass
    except DuctalError as exc:
        assert exc.message
    assert all_rows(engine) == before  # refused or undone: nothing half-imported remains
    with session_scope(engine) as session:
        assert audit.verify_chain(session).ok


class _Undo(Exception):
    """Raised inside the transaction to roll an accepted import back."""


form_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = [f.key for f in builtin_protocol("lavage-observational").form("adverse_event").fields]


@settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.dictionaries(st.sampled_from([*FIELDS, "junk"]), form_values, max_size=8))
def test_any_form_data_is_saved_or_refused_whole(
    exported: tuple[Engine, str, str], data: dict[str, object]
) -> None:
    engine, _dictionary, _rows = exported
    before = all_rows(engine)
    try:
        with session_scope(engine) as session:
            subject = records.list_subjects(session, status="enrolled")[0]
            forms.save_form(
                session,
                subject=subject,
                form_key="adverse_event",
                event_key="unscheduled",
                data=data,
                actor="fuzz",
            )
            raise _Undo
    except _Undo:
        pass
    except DuctalError as exc:
        assert exc.message and exc.problems
    assert all_rows(engine) == before
