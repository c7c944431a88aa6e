"""The efficacy report on a synthetic cohort of each built-in protocol, checked against the
statistics computed directly from the analysis dataset, and on bad input."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sqlalchemy import Engine

from ductal import accounts, forms, records
from ductal.db import make_engine, migrate, session_scope
from ductal.outcomes.dataset import AnalysisData, derive
from ductal.outcomes.extract import extract
from ductal.protocols.loader import builtin_protocols
from ductal.reports import figures, style
from ductal.reports.build import ReportOutput, analyse, build_report
from ductal.stats.comparison import compare_proportions
from ductal.stats.proportions import proportion
from ductal.stats.survival import KaplanMeier
from ductal.synthetic import generate_cohort

PROTOCOLS = ["lavage-observational", "lavage-vs-steroid-ni", "refractory-igm-adaptive"]
N_SUBJECTS = 30


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A SQLite database with a synthetic cohort on every built-in protocol (built once)."""
    path = tmp_path_factory.mktemp("report") / "study.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    with session_scope(engine) as session:
        for protocol in builtin_protocols():
            records.register_protocol(session, protocol=protocol, actor="setup")
        site = accounts.create_site(session, code="RIV", name="Riverside", actor="setup")
        seeds = np.random.SeedSequence(2024).spawn(len(PROTOCOLS))
        for pid, seed in zip(PROTOCOLS, seeds, strict=True):
            generate_cohort(
                session,
                protocol_id=pid,
                n_subjects=N_SUBJECTS,
                rng=np.random.default_rng(seed),
                sites=[site],
            )
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def datasets(study: Engine) -> dict[str, AnalysisData]:
    return {pid: derive(extract(study, pid)) for pid in PROTOCOLS}


@pytest.fixture(scope="module")
def built(study: Engine, tmp_path_factory: pytest.TempPathFactory) -> ReportOutput:
    """The English report of every protocol, without PDF (built once)."""
    return build_report(study, tmp_path_factory.mktemp("built"), pdf=False)


@pytest.mark.parametrize("protocol_id", PROTOCOLS)
def test_report_files(built: ReportOutput, protocol_id: str) -> None:
    out = built
    html = out.html.read_text()
    assert "Clopper-Pearson" in html and "intention to treat" in html
    assert "Kaplan-Meier" in html and "Aalen-Johansen" in html
    names = {p.name for p in out.figures}
    expected = {"consort", "cr_rate_forest", "time_to_cr_km", "swimmer", "waterfall"}
    assert {f"{protocol_id}_{k}.png" for k in expected} <= names
    for png in out.figures:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="figures/{png.name}"' in html
    for csv in out.tables:
        assert csv.stat().st_size > 0
    assert set(out.timings) >= {"extract", "derive", "statistics", "figures", "render"}


def test_cr_rate_matches_direct_statistics(
    built: ReportOutput, datasets: dict[str, AnalysisData]
) -> None:
    data = datasets["lavage-observational"]
    report = analyse(data)
    itt = data.subjects[data.subjects["itt"]]
    # an independent count of CR by the horizon from the per-assessment table
    horizon = data.horizon_days + data.horizon_grace_days
    a = data.assessments
    first_cr = a[a["derived_response"] == "CR"].groupby("study_id")["day"].min()
    competing = itt.set_index("study_id")["status_code"] == 2
    counted = sum(
        1
        for sid in itt["study_id"]
        if sid in first_cr.index and first_cr[sid] <= horizon and not competing[sid]
    )
    assert counted == int(itt["cr_by_horizon"].sum())
    got = report.results["cr_rate"]["itt:lavage"]
    direct = proportion(counted, len(itt))
    assert got["exact"].estimate == pytest.approx(direct.estimate, abs=1e-12)
    assert (got["exact"].lower, got["exact"].upper) == pytest.approx((direct.lower, direct.upper))
    wilson = proportion(counted, len(itt), method="wilson")
    assert got["wilson"].lower == pytest.approx(wilson.lower)
    # the CSV written for the table holds the same numbers
    out = built
    table = pd.read_csv(out.directory / "tables" / "lavage-observational_cr_rate.csv")
    row = table[(table["population"] == "itt")].iloc[0]
    assert (row["events"], row["n"]) == (counted, len(itt))
    assert row["exact_lower"] == pytest.approx(direct.lower)
    tests = pd.read_csv(out.directory / "tables" / "lavage-observational_cr_rate_benchmarks.csv")
    steroid_low = tests[(tests["benchmark"] == "steroid_cr") & (tests["rate"] == 0.63)].iloc[0]
    assert steroid_low["p_value"] == pytest.approx(
        proportion(counted, len(itt), benchmark=0.63).p_value
    )


def test_time_to_cr_matches_direct_kaplan_meier(datasets: dict[str, AnalysisData]) -> None:
    data = datasets["lavage-vs-steroid-ni"]
    report = analyse(data)
    use = data.subjects[data.subjects["itt"] & data.subjects["time_months"].notna()]
    for arm, label in (
        ("lavage", "Ductal lavage + massage"),
        ("steroid", "Oral corticosteroid (6 months)"),
    ):
        sub = use[use["arm"] == arm]
        direct = KaplanMeier().fit(sub["time_months"], sub["cr_event"]).curves_["all"]
        got = report.results["time_to_cr"]["km"].curves_[label]
        np.testing.assert_allclose(got.survival, direct.survival, rtol=1e-12)
        med_got, med_direct = got.median, direct.median
        for x, y in ((med_got.estimate, med_direct.estimate), (med_got.lower, med_direct.lower)):
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y)


def test_non_inferiority_matches_direct_comparison(datasets: dict[str, AnalysisData]) -> None:
    data = datasets["lavage-vs-steroid-ni"]
    report = analyse(data)
    itt = data.subjects[data.subjects["itt"]]
    lav, ste = itt[itt["arm"] == "lavage"], itt[itt["arm"] == "steroid"]
    direct = compare_proportions(
        int(lav["cr_by_horizon"].sum()), len(lav), int(ste["cr_by_horizon"].sum()), len(ste),
        margin=-0.15,
    )  # fmt: skip
    got = report.results["comparison"]["itt:wald"]
    assert (got.estimate, got.lower, got.upper) == pytest.approx(
        (direct.estimate, direct.lower, direct.upper)
    )
    assert got.non_inferior == direct.non_inferior
    assert "pp:newcombe" in report.results["comparison"]


def test_adaptive_looks_and_competing_risks(datasets: dict[str, AnalysisData]) -> None:
    data = datasets["refractory-igm-adaptive"]
    report = analyse(data)
    looks = report.results["adaptive"]["looks"]
    assert set(looks["key"]) <= {"a_supportive", "b_prednisolone", "c_methotrexate"}
    last = looks[looks["look"] == looks["look"].max()]
    # responders at the last look = every subject with an outcome, per arm
    assert int(last["n"].sum()) == int(looks.groupby("look")["n"].sum().max())
    from scipy.stats import beta

    row = last.iloc[0]
    assert row["prob_above"] == pytest.approx(
        beta.sf(0.5, 1 + row["responders"], 1 + row["n"] - row["responders"]), abs=1e-9
    )
    cif = report.results["cif"]["cif"]
    assert 1 in cif.causes


def test_relapse_rate_against_pooled_recurrence(datasets: dict[str, AnalysisData]) -> None:
    data = datasets["lavage-observational"]
    report = analyse(data)
    cr = data.subjects[data.subjects["itt"] & (data.subjects["cr_event"] == 1)]
    got = report.results["relapse"]["rate:lavage"]
    direct = proportion(int(cr["relapse_event"].sum()), len(cr), benchmark=0.17)
    assert (got.events, got.n) == (direct.events, direct.n)
    assert got.p_value == pytest.approx(direct.p_value)


def test_chinese_report_with_pdf(study: Engine, tmp_path: Path) -> None:
    out = build_report(study, tmp_path, protocol_ids=["lavage-vs-steroid-ni"], lang="zh")
    html = out.html.read_text()
    assert "疗效分析报告" in html and "意向性治疗" in html
    assert out.pdf is not None and out.pdf.read_bytes()[:5] == b"%PDF-"


SCREENING = {
    "screening_date": "2017-03-01", "age": 30, "sex": "female", "non_lactating_6m": 1,
    "pathology_confirmed": 1, "diagnosis": "igm", "carcinoma_excluded": 1,
    "consent_signed": 1, "consent_date": "2017-03-01",
}  # fmt: skip


def _follow_up(date: str, **overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "assessment_date": date, "mass": 1, "erythema": 0, "abscess": 0, "fistula": 0,
        "ulcer": 0, "skin_involvement": 0, "us_done": 0, "investigator_response": "sd",
    }  # fmt: skip
    data.update(overrides)
    return data


def _bad_study(engine: Engine, *, with_visits: bool) -> None:
    with session_scope(engine) as session:
        for protocol in builtin_protocols():
            records.register_protocol(session, protocol=protocol, actor="setup")
        site = accounts.create_site(session, code="RIV", name="Riverside", actor="setup")
        for _ in range(2):
            subject = records.screen(
                session, protocol_id="lavage-observational", site=site, screening=SCREENING,
                actor="coord", today=dt.date(2026, 1, 1),
            )  # fmt: skip
            records.enrol(session, subject=subject, actor="coord", enrolled_on=dt.date(2017, 3, 2))
        if not with_visits:
            return
        # LAV-0002: no ultrasound ever, month 1 seen on day 60 (window 23-37), month 2 missed
        forms.save_form(
            session, subject=subject, form_key="baseline", actor="coord",
            data={"assessment_date": "2017-03-02", "side": "left", "infection_evidence": 0,
                  "presentation": ["mass"]},
        )  # fmt: skip
        for date, event in (("2017-05-01", "month_1"), ("2017-05-31", "month_3")):
            forms.save_form(
                session, subject=subject, form_key="follow_up", event_key=event, actor="coord",
                data=_follow_up(date),
            )  # fmt: skip


def test_subjects_without_assessment_are_listed(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'bad.sqlite'}")
    migrate(engine)
    _bad_study(engine, with_visits=False)
    out = build_report(engine, tmp_path / "out", pdf=False)
    html = out.html.read_text()
    # no assessment at all: the time-to-event parts say so and name the subjects
    assert "no enrolled subject has a follow-up assessment" in html
    assert "LAV-0001" in html and "LAV-0002" in html
    # protocols with no subject at all still get a section saying so
    assert "nothing could be analysed" in html
    assert any("lavage-vs-steroid-ni" in line for line in out.not_computed)
    engine.dispose()


def test_missing_ultrasound_and_visit_windows_are_reported(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'bad.sqlite'}")
    migrate(engine)
    _bad_study(engine, with_visits=True)
    out = build_report(engine, tmp_path / "out", protocol_ids=["lavage-observational"], pdf=False)
    html = out.html.read_text()
    assert "no lesion size could be compared with baseline" in html
    tables = out.directory / "tables"
    oow = pd.read_csv(tables / "lavage-observational_out_of_window.csv")
    assert list(oow["study_id"]) == ["LAV-0002"] and list(oow["event_key"]) == ["month_1"]
    missed = pd.read_csv(tables / "lavage-observational_missed_visits.csv")
    assert list(missed["missed_visits"]) == ["month_2"]
    done = pd.read_csv(tables / "lavage-observational_completeness.csv")
    values = dict(zip(done.iloc[:, 0], done.iloc[:, 1], strict=True))
    assert values["Assessments without ultrasound"] == 2
    assert values["Subjects with no follow-up assessment"] == 1
    engine.dispose()


def test_figures_draw_on_a_given_axes() -> None:
    with style.context("en"):
        fig = style.new_figure(3.0)
        ax = fig.add_subplot()
        rows = [figures.ForestRow("a", 0.5, 0.3, 0.7), figures.ForestRow("b", 0.8, 0.6, 0.9)]
        assert figures.forest(rows, xlabel="rate", ax=ax) is fig
        assert isinstance(figures.forest(rows, xlabel="rate"), Figure)


def test_cjk_font_is_used_for_chinese() -> None:
    families = style.font_families("zh")
    if style.available_cjk_font() is None:
        assert families == list(style.LATIN_FONTS)
    else:
        assert families[0] == style.available_cjk_font()
        assert style.font_families("en")[0] == "DejaVu Sans"
