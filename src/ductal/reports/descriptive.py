"""Descriptive sections: participant flow, Table 1, course of each subject, adverse events and
data completeness. Counts, means and quartiles only — no inference happens here.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from ductal.outcomes.dataset import MONTH_DAYS, AnalysisData
from ductal.reports import figures
from ductal.reports.efficacy import arms
from ductal.reports.i18n import exclusion, t
from ductal.reports.model import FigureSpec, Section, Table

SWIMMER_MAX = 40


def _n_pct(mask: pd.Series, known: pd.Series) -> str:
    n = int(known.sum())
    if n == 0:
        return "–"
    k = int((mask & known).sum())
    return f"{k} ({100 * k / n:.1f}%)"


def _mean_sd(values: pd.Series) -> str:
    v = values.dropna().astype(float)
    if v.empty:
        return "–"
    sd = float(v.std(ddof=1)) if len(v) > 1 else math.nan
    return f"{v.mean():.1f} ({sd:.1f})" if not math.isnan(sd) else f"{v.mean():.1f}"


def _median_iqr(values: pd.Series, digits: int = 1) -> str:
    v = values.dropna().astype(float)
    if v.empty:
        return "–"
    q1, q2, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    return f"{q2:.{digits}f} ({q1:.{digits}f}–{q3:.{digits}f})"


def _eligibility_label(data: AnalysisData, message: str, lang: str) -> str:
    """Return the eligibility rule's message in ``lang`` (reasons are stored in English)."""
    label = next(
        (r.message.get(lang) for r in data.protocol.eligibility if r.message.en == message), message
    )
    return f"{label}: {t('not_met', lang)}"


def consort(data: AnalysisData, lang: str) -> tuple[Section, dict[str, Any]]:
    sec = Section("consort", t("sec_consort", lang))
    sc = data.screening
    screened = len(sc)
    inel = sc[sc["status"] == "ineligible"]
    reasons: Counter[str] = Counter()
    for text in inel["status_reason"].dropna():
        for part in str(text).split(";"):
            reasons[_eligibility_label(data, part.strip().removesuffix(": not met"), lang)] += 1
    enrolled = sc[sc["enrolled"]]
    not_enrolled = sc[~sc["enrolled"] & (sc["status"] != "ineligible")]
    s = data.subjects
    results: dict[str, Any] = {
        "screened": screened,
        "ineligible": len(inel),
        "reasons": dict(reasons),
        "enrolled": len(enrolled),
        "not_enrolled": len(not_enrolled),
    }
    boxes = [
        (t("screened", lang), f"n = {screened}", []),
        (
            t("enrolled", lang),
            f"n = {len(enrolled)}",
            [f"{t('ineligible', lang)}: n = {len(inel)}"]
            + [f"  · {r}: {k}" for r, k in reasons.most_common(6)]
            + (
                [f"{t('not_enrolled', lang)}: n = {len(not_enrolled)}"] if len(not_enrolled) else []
            ),
        ),
    ]
    arm_boxes = []
    rows = [
        {t("item", lang): t("screened", lang), t("count", lang): screened},
        {t("item", lang): t("ineligible", lang), t("count", lang): len(inel)},
        *[
            {t("item", lang): f"  {t('reason', lang)}: {r}", t("count", lang): k}
            for r, k in reasons.most_common()
        ],
        {t("item", lang): t("not_enrolled", lang), t("count", lang): len(not_enrolled)},
        {t("item", lang): t("enrolled", lang), t("count", lang): len(enrolled)},
    ]
    for key, label in arms(data, lang):
        a = s[s["arm"] == key]
        pp_out = a[~a["per_protocol"]]
        excl: Counter[str] = Counter()
        for text in pp_out["pp_exclusion"]:
            for part in str(text).split(";"):
                if part.strip():
                    excl[exclusion(part.strip(), lang)] += 1
        lines = [
            f"{t('allocated', lang)}: {len(a)}",
            f"{t('lost', lang)}: {int((a['status'] == 'lost_to_follow_up').sum())}",
            f"{t('withdrawn', lang)}: {int((a['status'] == 'withdrawn').sum())}",
            f"{t('analysed_itt', lang)}: {int(a['itt'].sum())}",
            f"{t('analysed_pp', lang)}: {int(a['per_protocol'].sum())}",
            *[f"  − {r}: {k}" for r, k in excl.most_common()],
        ]
        arm_boxes.append((label, lines))
        results[f"arm:{key}"] = {
            "allocated": len(a),
            "itt": int(a["itt"].sum()),
            "pp": int(a["per_protocol"].sum()),
            "pp_exclusions": dict(excl),
        }
        for line in lines:
            name, _, value = line.rpartition(":")
            rows.append({t("item", lang): f"{label}: {name.strip()}", t("count", lang): int(value)})
    unallocated = s[s["arm"].isna()]
    if not unallocated.empty:
        sec.skip(
            f"{len(unallocated)} enrolled subject(s) without an arm", list(unallocated["study_id"])
        )
    sec.tables.append(
        Table(
            "consort",
            t("sec_consort", lang),
            pd.DataFrame(rows),
            note=f"{t('population', lang)}: {t('pop_screened', lang)}.",
        )
    )
    sec.figures.append(
        FigureSpec(
            "consort", t("sec_consort", lang), partial(figures.flow_diagram, boxes, arm_boxes)
        )
    )
    return sec, results


def table_one(data: AnalysisData, lang: str) -> tuple[Section, dict[str, Any]]:
    sec = Section("baseline", t("sec_baseline", lang))
    s = data.subjects
    if s.empty:
        sec.skip(t("nc_no_subjects", lang))
        return sec, {}
    groups = [(label, s[s["arm"] == key]) for key, label in arms(data, lang)]
    if len(groups) != 1:
        groups.append((t("all", lang), s))

    def column(g: pd.DataFrame) -> dict[str, str]:
        has = g["diagnosis"].notna()
        inf = g["infection_evidence"].notna()
        out = {
            "n": str(len(g)),
            t("age", lang): _mean_sd(g["age"]),
            t("bmi", lang): _mean_sd(g["bmi"]),
            t("diagnosis_igm", lang): _n_pct(g["diagnosis"] == "igm", has),
            t("diagnosis_pd", lang): _n_pct(g["diagnosis"] == "pd", has),
            t("severity", lang): _median_iqr(g["severity_score"], 0),
            t("severe", lang): _n_pct(g["severity_score"] >= 6, g["severity_score"].notna()),
            t("infection", lang): _n_pct(g["infection_evidence"] == 1, inf),
            t("lesion", lang): _median_iqr(g["baseline_size_mm"]),
            t("abscess", lang): _n_pct(
                g["abscess_at_baseline"] == 1, g["abscess_at_baseline"].notna()
            ),
            t("fistula", lang): _n_pct(
                g["fistula_at_baseline"] == 1, g["fistula_at_baseline"].notna()
            ),
            t("smoking", lang): _n_pct(g["smoking"] == "current", g["smoking"].notna()),
            t("ana", lang): _n_pct(g["ana"] == "positive", g["ana"].isin(["positive", "negative"])),
            t("erythema_nodosum", lang): _n_pct(
                g["erythema_nodosum"] == 1, g["erythema_nodosum"].notna()
            ),
            t("hypothyroidism", lang): _n_pct(
                g["hypothyroidism"] == 1, g["hypothyroidism"].notna()
            ),
        }
        if (data.subjects["lavage_sessions"] > 0).any():
            lav = g[g["lavage_sessions"] > 0]["lavage_sessions"]
            out[t("sessions", lang)] = _median_iqr(lav, 0)
        return out

    cols = {label: column(g) for label, g in groups}
    frame = pd.DataFrame(cols)
    frame.index.name = t("characteristic", lang)
    frame = frame.reset_index()
    sec.tables.append(
        Table(
            "table1",
            t("sec_baseline", lang),
            frame,
            note=f"{t('table1_method', lang)} {t('population', lang)}: {t('pop_enrolled', lang)}.",
        )
    )
    return sec, {"table1": frame}


def course(data: AnalysisData, lang: str) -> tuple[Section, dict[str, Any]]:
    sec = Section("course", t("sec_course", lang))
    s = data.subjects
    a = data.assessments
    with_visits = s[s["n_assessments"] > 0]
    if with_visits.empty:
        sec.skip(t("nc_no_times", lang), list(s["study_id"]))
        return sec, {}
    arm_index = {k: i for i, (k, _) in enumerate(arms(data, lang))}
    ordered = with_visits.assign(end=with_visits["last_assessment_day"] / MONTH_DAYS)
    ordered = ordered.sort_values(["end", "study_id"], ascending=[False, True])
    if len(ordered) > SWIMMER_MAX:
        pick = np.unique(np.linspace(0, len(ordered) - 1, SWIMMER_MAX).round().astype(int))
        shown = ordered.iloc[pick]
        sec.paragraphs.append(t("swimmer_sample", lang, shown=len(shown), total=len(ordered)))
    else:
        shown = ordered
    shown = shown.iloc[::-1]  # longest at the top
    course_days = float(data.protocol.settings.get("lavage_course_days", 14))
    lanes = pd.DataFrame(
        {
            "study_id": shown["study_id"].to_numpy(),
            "arm_index": [arm_index.get(k, 0) for k in shown["arm"]],
            "end": shown["end"].to_numpy(float),
            "relapse": np.where(
                shown["relapse_event"] == 1,
                (shown["time_days"] + shown["relapse_days"]) / MONTH_DAYS,
                np.nan,
            ),
            "rescue": (shown["rescue_day"] / MONTH_DAYS).to_numpy(float),
            "sessions_end": np.where(shown["lavage_sessions"] > 0, course_days / MONTH_DAYS, 0.0),
        }
    )
    marks = a[a["study_id"].isin(set(shown["study_id"]))][["study_id", "month", "derived_response"]]
    marks = marks.rename(columns={"derived_response": "response"})
    sec.figures.append(
        FigureSpec(
            "swimmer",
            f"{t('swimmer_title', lang)}: {t('pop_itt', lang)}.",
            partial(
                figures.swimmer,
                lanes,
                marks,
                xlabel=t("months", lang),
                legend={
                    "sessions": t("lavage_session", lang),
                    "relapse": t("relapse", lang),
                    "rescue": t("rescue", lang),
                },
            ),
        )
    )
    changes = s[s["best_change"].notna()][["study_id", "best_change", "best_response"]]
    missing = s[s["best_change"].isna() & (s["n_assessments"] > 0)]
    if changes.empty:
        sec.skip(t("nc_no_measure", lang), list(missing["study_id"]))
    else:
        if not missing.empty:
            sec.skip(
                f"{t('waterfall_title', lang)}: {t('nc_no_measure', lang)}",
                list(missing["study_id"]),
            )
        crit = data.protocol.response
        sec.figures.append(
            FigureSpec(
                "waterfall",
                f"{t('waterfall_title', lang)} ({crit.measure}); −{crit.partial_reduction:.0%} PR, "
                f"+{crit.progression_growth:.0%} PD; n = {len(changes)}.",
                partial(
                    figures.waterfall,
                    changes,
                    ylabel=t("best_change_axis", lang),
                    xlabel=t("subjects_axis", lang),
                    thresholds=(crit.partial_reduction, crit.progression_growth),
                ),
            )
        )
    return sec, {"lanes": lanes, "changes": changes}


def safety(data: AnalysisData, lang: str) -> tuple[Section, dict[str, Any]]:
    sec = Section("safety", t("sec_safety", lang))
    ae = data.adverse_events
    s = data.subjects
    if ae.empty:
        sec.skip(t("nc_no_ae", lang))
        return sec, {}
    arm_list = arms(data, lang)
    rows = []
    for grade in range(1, 6):
        row: dict[str, Any] = {t("grade", lang): grade}
        for key, label in arm_list:
            g = ae[(ae["arm"] == key) & (ae["grade"] == grade)]
            row[f"{label}: {t('related', lang)}"] = int(g["related"].sum())
            row[f"{label}: {t('unrelated', lang)}"] = int((~g["related"].astype(bool)).sum())
        rows.append(row)
    total: dict[str, Any] = {t("grade", lang): t("events", lang)}
    subj: dict[str, Any] = {t("grade", lang): t("subjects_with", lang)}
    serious: dict[str, Any] = {t("grade", lang): t("serious", lang)}
    for key, label in arm_list:
        a = ae[ae["arm"] == key]
        n = int((s["arm"] == key).sum())
        total[f"{label}: {t('related', lang)}"] = int(a["related"].sum())
        total[f"{label}: {t('unrelated', lang)}"] = int((~a["related"].astype(bool)).sum())
        k = a["study_id"].nunique()
        subj[f"{label}: {t('related', lang)}"] = (
            f"{a[a['related'].astype(bool)]['study_id'].nunique()}/{n}"
        )
        subj[f"{label}: {t('unrelated', lang)}"] = f"{k}/{n} ({t('all', lang)})"
        serious[f"{label}: {t('related', lang)}"] = int((a["serious"] == 1).sum())
        serious[f"{label}: {t('unrelated', lang)}"] = ""
    rows += [total, subj, serious]
    sec.tables.append(
        Table(
            "adverse_events",
            t("sec_safety", lang),
            pd.DataFrame(rows),
            note=f"{t('ae_note', lang)} {t('population', lang)}: {t('pop_enrolled', lang)}.",
            csv=ae,
        )
    )
    by_grade = pd.DataFrame(
        {
            t("related", lang): [int(ae[(ae["grade"] == g)]["related"].sum()) for g in range(1, 6)],
            t("unrelated", lang): [
                int((~ae[ae["grade"] == g]["related"].astype(bool)).sum()) for g in range(1, 6)
            ],
        },
        index=[f"{t('grade', lang)} {g}" for g in range(1, 6)],
    )
    sec.figures.append(
        FigureSpec(
            "adverse_events",
            f"{t('sec_safety', lang)}: {t('pop_enrolled', lang)}.",
            partial(
                figures.stacked_bars,
                by_grade,
                ylabel=t("events", lang),
                colours=["#D55E00", "#9A9A9A"],
            ),
        )
    )
    return sec, {"by_grade": by_grade}


def completeness(data: AnalysisData, lang: str) -> tuple[Section, dict[str, Any]]:
    sec = Section("completeness", t("sec_completeness", lang))
    s = data.subjects
    a = data.assessments
    q = data.open_queries
    derived_q = int((q["origin"] == "derived").sum()) if not q.empty else 0
    no_visit = s[s["n_assessments"] == 0]
    items = [
        (t("n_subjects_enrolled", lang), len(s)),
        (t("n_assessments", lang), len(a)),
        (t("missed_visits", lang), int(s["n_missed_visits"].sum()) if not s.empty else 0),
        (t("out_of_window", lang), int(a["in_window"].eq(False).sum()) if not a.empty else 0),
        (t("missing_us", lang), int(a["lesion_size_mm"].isna().sum()) if not a.empty else 0),
        (t("no_assessment", lang), len(no_visit)),
        (t("disagreements", lang), int(a["agrees"].eq(False).sum()) if not a.empty else 0),
        (t("open_queries", lang), len(q)),
        (f"  {t('derived_queries', lang)}", derived_q),
    ]
    sec.tables.append(
        Table(
            "completeness",
            t("sec_completeness", lang),
            pd.DataFrame(items, columns=[t("item", lang), t("value", lang)]),
            note=f"{t('population', lang)}: {t('pop_enrolled', lang)}.",
        )
    )
    if not no_visit.empty:
        sec.skip(t("no_assessment", lang), list(no_visit["study_id"]))
    missed = s[s["n_missed_visits"] > 0][["study_id", "missed_visits"]] if not s.empty else s
    oow = (
        a[a["in_window"].eq(False)][["study_id", "event_key", "assessment_date", "day"]]
        if not a.empty
        else a
    )
    problems = data.problems_frame()
    if not problems.empty:
        frame = problems.rename(
            columns={
                "study_id": t("study_id", lang),
                "kind": t("kind", lang),
                "detail": t("detail", lang),
            }
        )
        sec.tables.append(Table("problems", t("problems", lang), frame))
    if len(missed):
        sec.tables.append(
            Table("missed_visits", t("missed_visits", lang), missed.reset_index(drop=True))
        )
    if len(oow):
        sec.tables.append(
            Table("out_of_window", t("out_of_window", lang), oow.reset_index(drop=True))
        )
    return sec, {"items": dict(items)}
