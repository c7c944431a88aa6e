"""Efficacy sections: CR rate against benchmarks, time to CR, competing risks, relapse,
subgroups and Cox model, non-inferiority, adaptive interim looks.

Every number comes from :mod:`ductal.stats` (or, for the adaptive posterior, from
:mod:`ductal.design.posterior`); this module only chooses the data, calls, and words the result
with its method and population.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from ductal.design.posterior import prob_above
from ductal.errors import DuctalError
from ductal.outcomes.dataset import MONTH_DAYS, AnalysisData, records_of
from ductal.reports import figures
from ductal.reports.i18n import t
from ductal.reports.model import FigureSpec, Section, Table, ci, num, pct, pval
from ductal.reports.style import arm_colour
from ductal.stats.comparison import compare_proportions
from ductal.stats.competing_risks import cumulative_incidence
from ductal.stats.cox import CoxPH
from ductal.stats.proportions import proportion
from ductal.stats.survival import KaplanMeier

LANDMARKS = (3, 6, 12)


def arms(data: AnalysisData, lang: str) -> list[tuple[str, str]]:
    """Return (key, label) of the protocol's arms that have subjects, in protocol order."""
    present = set(data.subjects["arm"].dropna())
    return [(a.key, a.label.get(lang)) for a in data.protocol.arms if a.key in present]


def therapy_labels(data: AnalysisData, codes: list[str] | tuple[str, ...], lang: str) -> str:
    """Return therapy codes (e.g. the competing events) as the rescue form labels them."""
    try:
        field = data.protocol.form("rescue_therapy").field("therapy")
    except KeyError:
        return ", ".join(codes)
    return ", ".join(field.choice_label(c, lang) for c in codes)


def _population(data: AnalysisData, which: str) -> pd.DataFrame:
    s = data.subjects
    return s[s["itt"]] if which == "itt" else s[s["per_protocol"]]


def _pop_label(which: str, lang: str) -> str:
    return t("pop_itt" if which == "itt" else "pop_pp", lang)


def horizon_months(data: AnalysisData) -> float:
    return round(data.horizon_days / MONTH_DAYS)


# ------------------------------------------------------------------ CR rate and benchmarks


def cr_rate(data: AnalysisData, lang: str) -> tuple[Section, dict[str, Any]]:
    sec = Section("cr_rate", t("sec_cr_rate", lang))
    results: dict[str, Any] = {}
    months = horizon_months(data)
    arm_list = arms(data, lang)
    if not arm_list:
        sec.skip(t("nc_no_subjects", lang))
        return sec, results
    sec.paragraphs.append(
        t("cr_definition", lang, days=data.horizon_days + data.horizon_grace_days)
    )
    rows = []
    csv_rows = []
    forest_rows: list[figures.ForestRow] = []
    for which in ("itt", "pp"):
        pop = _population(data, which)
        for i, (key, label) in enumerate(arm_list):
            sub = pop[pop["arm"] == key]
            if sub.empty:
                continue
            events, n = int(sub["cr_by_horizon"].sum()), len(sub)
            exact = proportion(events, n, method="clopper-pearson")
            wil = proportion(events, n, method="wilson")
            results[f"{which}:{key}"] = {"exact": exact, "wilson": wil}
            rows.append(
                {
                    t("arm", lang): label,
                    t("population", lang): _pop_label(which, lang),
                    t("events_n", lang): f"{events}/{n}",
                    t("estimate", lang): pct(exact.estimate),
                    t("ci_exact", lang): ci(exact.lower, exact.upper),
                    t("ci_wilson", lang): ci(wil.lower, wil.upper),
                }
            )
            csv_rows.append(
                {
                    "arm": key,
                    "population": which,
                    "events": events,
                    "n": n,
                    "estimate": exact.estimate,
                    "exact_lower": exact.lower,
                    "exact_upper": exact.upper,
                    "exact_method": exact.method,
                    "wilson_lower": wil.lower,
                    "wilson_upper": wil.upper,
                    "wilson_method": wil.method,
                }
            )
            forest_rows.append(
                figures.ForestRow(
                    f"{label} ({_pop_label(which, lang)})",
                    exact.estimate,
                    exact.lower,
                    exact.upper,
                    text=f"{events}/{n}  {pct(exact.estimate)}",
                    colour=arm_colour(i),
                    marker="s" if which == "itt" else "o",
                )
            )
    title = t("cr_by_horizon", lang, months=months)
    sec.tables.append(
        Table(
            "cr_rate",
            title,
            pd.DataFrame(rows),
            note=f"{t('method', lang)}: Clopper-Pearson exact; Wilson score. ",
            csv=pd.DataFrame(csv_rows),
        )
    )
    # one-sample exact tests against the literature (ITT)
    benchmarks = [b for b in data.protocol.benchmarks if b.measure == "cr_rate"]
    test_rows = []
    test_csv = []
    itt = _population(data, "itt")
    for b in benchmarks:
        band = (b.low, b.high) if b.high is not None else None
        forest_rows.append(
            figures.ForestRow(
                b.label.get(lang),
                b.low if b.high is None else math.nan,
                math.nan,
                math.nan,
                text=pct(b.low) + (f"–{pct(b.high)}" if b.high is not None else ""),
                colour="#7F7F7F",
                marker="D",
                band=band,
            )
        )
        for key, label in arm_list:
            sub = itt[itt["arm"] == key]
            if sub.empty:
                continue
            events, n = int(sub["cr_by_horizon"].sum()), len(sub)
            for rate in [b.low] + ([b.high] if b.high is not None and b.high < 1 else []):
                res = proportion(events, n, benchmark=rate)
                results[f"test:{b.key}:{key}:{rate:g}"] = res
                test_rows.append(
                    {
                        t("arm", lang): label,
                        t("benchmark", lang): f"{b.label.get(lang)} = {pct(rate)}",
                        t("events_n", lang): f"{events}/{n} ({pct(res.estimate)})",
                        t("p_value", lang): pval(res.p_value),
                        t("test", lang): str(res.test_method),
                    }
                )
                test_csv.append(
                    {
                        "arm": key,
                        "population": "itt",
                        "benchmark": b.key,
                        "rate": rate,
                        "events": events,
                        "n": n,
                        "p_value": res.p_value,
                        "test": res.test_method,
                    }
                )
    if test_rows:
        sec.tables.append(
            Table(
                "cr_rate_benchmarks",
                f"{title}: {t('benchmark', lang)}",
                pd.DataFrame(test_rows),
                note=f"{t('population', lang)}: {t('pop_itt', lang)}. {t('source', lang)}: "
                + "; ".join(dict.fromkeys(f"{b.label.get(lang)}: {b.source}" for b in benchmarks)),
                csv=pd.DataFrame(test_csv),
            )
        )
    else:
        sec.skip(t("nc_benchmark", lang))
    sec.figures.append(
        FigureSpec(
            "cr_rate_forest",
            f"{title}: {t('this_study', lang)} (■ {t('pop_itt', lang)}, ● {t('pop_pp', lang)}; "
            f"95% CI Clopper-Pearson) {t('benchmark', lang)} (◆ / ▬).",
            partial(figures.forest, forest_rows, xlabel=t("proportion_axis", lang)),
        )
    )
    return sec, results


# ------------------------------------------------------------------ time to CR (Kaplan-Meier)


def _ticks(max_months: float) -> list[float]:
    step = 3 if max_months <= 24 else 6
    return [float(x) for x in np.arange(0, max_months + 0.01, step)]


def time_to_cr(data: AnalysisData, lang: str) -> tuple[Section, dict[str, Any]]:
    sec = Section("time_to_cr", t("sec_time_to_cr", lang))
    results: dict[str, Any] = {}
    itt = _population(data, "itt")
    no_time = itt[itt["time_months"].isna()]
    if not no_time.empty:
        sec.skip(
            t("nc_no_times", lang)
            if len(no_time) == len(itt)
            else f"{len(no_time)} × {t('no_assessment', lang).lower()}",
            list(no_time["study_id"]),
        )
    use = itt[itt["time_months"].notna()]
    if use.empty or use["cr_event"].sum() == 0:
        if not use.empty:
            sec.skip(t("nc_no_events", lang))
        return sec, results
    arm_list = [(k, lab) for k, lab in arms(data, lang) if (use["arm"] == k).any()]
    labels = dict(arm_list)
    km = KaplanMeier(conf_type="log").fit(
        use["time_months"].to_numpy(float),
        use["cr_event"].to_numpy(int),
        group=use["arm"].map(labels).to_numpy(),
    )
    results["km"] = km
    sec.paragraphs.append(t("km_note", lang))
    rows = []
    csv_rows = []
    curves = []
    x_max = float(min(use["time_months"].max(), 24.0 if data.horizon_days <= 400 else 30.0))
    ticks = _ticks(x_max)
    risk = {}
    for key, label in arm_list:
        curve = km.curves_[label]
        med = curve.median
        at = curve.at(list(LANDMARKS))
        row: dict[str, Any] = {
            t("arm", lang): label,
            t("count", lang): curve.n,
            t("events", lang): curve.events,
            t("median_cr", lang): (
                t("not_reached", lang)
                if math.isnan(med.estimate)
                else f"{num(med.estimate)} ({num(med.lower)} to {num(med.upper)})"
            ),
        }
        csv_row: dict[str, Any] = {
            "arm": key,
            "population": "itt",
            "n": curve.n,
            "events": curve.events,
            "median_months": med.estimate,
            "median_lower": med.lower,
            "median_upper": med.upper,
            "method": curve.method,
        }
        for m, r in zip(LANDMARKS, records_of(at), strict=True):
            row[t("cr_at", lang, m=m)] = (
                f"{pct(r['cumulative_incidence'])} ({ci(r['ci_lower'], r['ci_upper'])})"
            )
            csv_row[f"cr_{m}m"] = r["cumulative_incidence"]
            csv_row[f"cr_{m}m_lower"] = r["ci_lower"]
            csv_row[f"cr_{m}m_upper"] = r["ci_upper"]
        rows.append(row)
        csv_rows.append(csv_row)
        curves.append(
            figures.StepCurve(
                label, curve.time, 1 - curve.survival, 1 - curve.upper, 1 - curve.lower
            )
        )
        risk[label] = curve.at(ticks)["n_risk"].to_numpy()
    sec.tables.append(
        Table(
            "time_to_cr",
            t("sec_time_to_cr", lang),
            pd.DataFrame(rows),
            note=f"{t('method', lang)}: {km.method}; {t('population', lang)}: "
            f"{t('pop_itt', lang)}, {len(use)}.",
            csv=pd.DataFrame(csv_rows),
        )
    )
    if km.logrank_ is not None:
        lr = km.logrank_
        results["logrank"] = lr
        sec.paragraphs.append(
            f"{t('logrank', lang)}: χ² = {lr.statistic:.2f}, df = {lr.df}, p = {pval(lr.p_value)} "
            f"({lr.method}; {t('pop_itt', lang)})."
        )
    band = None
    for b in data.protocol.benchmarks:
        if b.measure == "time_to_cr_months" and b.high is not None:
            band = (b.low, b.high, b.label.get(lang))
            for _key, label in arm_list:
                med_months = km.curves_[label].median.estimate
                if math.isnan(med_months):
                    verdict = t("not_reached", lang)
                elif med_months < b.low:
                    verdict = t("below_range", lang)
                elif med_months <= b.high:
                    verdict = t("within_range", lang)
                else:
                    verdict = t("above_range", lang)
                sec.paragraphs.append(
                    f"{label}: "
                    + t(
                        "median_vs_range",
                        lang,
                        median=num(med_months),
                        low=b.low,
                        high=b.high,
                        verdict=verdict,
                    )
                    + f" ({b.source})"
                )
    at_risk = pd.DataFrame(risk, index=ticks).T
    sec.figures.append(
        FigureSpec(
            "time_to_cr_km",
            f"{t('cum_cr', lang)} (1 − Kaplan-Meier, 95% CI log); {t('pop_itt', lang)}.",
            partial(
                figures.cumulative_curves,
                curves,
                xlabel=t("months", lang),
                ylabel=t("cum_cr", lang),
                at_risk=at_risk,
                at_risk_label=t("at_risk", lang),
                reference_band=band,
                x_max=x_max,
            ),
        )
    )
    return sec, results


# ------------------------------------------------------------------ competing risks


def competing(data: AnalysisData, lang: str) -> tuple[Section, dict[str, Any]]:
    sec = Section("cif", t("sec_cif", lang))
    results: dict[str, Any] = {}
    itt = _population(data, "itt")
    use = itt[itt["time_months"].notna()]
    if use.empty or use["cr_event"].sum() == 0:
        sec.skip(t("nc_no_events", lang) if not use.empty else t("nc_no_times", lang))
        return sec, results
    arm_list = [(k, lab) for k, lab in arms(data, lang) if (use["arm"] == k).any()]
    labels = dict(arm_list)
    cif = cumulative_incidence(
        use["time_months"].to_numpy(float),
        use["status_code"].to_numpy(int),
        group=use["arm"].map(labels).to_numpy(),
    )
    results["cif"] = cif
    names = {1: t("cif_cr", lang), 2: t("cif_competing", lang)}
    sec.paragraphs.append(
        t("competing_list", lang, events=therapy_labels(data, data.competing, lang))
        if 2 in cif.causes
        else t("no_competing", lang)
    )
    table = cif.at(list(LANDMARKS))
    rows, csv_rows, curves = [], [], []
    for key, label in arm_list:
        for cause in cif.causes:
            sub = table[(table["cause"] == cause) & (table["group"] == label)]
            row: dict[str, Any] = {t("arm", lang): label, t("cause", lang): names.get(cause, cause)}
            csv_row: dict[str, Any] = {
                "arm": key,
                "cause": cause,
                "population": "itt",
                "method": cif.method,
            }
            for m, r in zip(LANDMARKS, records_of(sub), strict=True):
                se = math.sqrt(r["variance"]) if not math.isnan(r["variance"]) else math.nan
                row[t("at_months", lang, m=m)] = f"{pct(r['estimate'])} (SE {num(100 * se)})"
                csv_row[f"cif_{m}m"] = r["estimate"]
                csv_row[f"cif_{m}m_se"] = se
            rows.append(row)
            csv_rows.append(csv_row)
            c = cif.curve(cause, label)
            time = np.concatenate((c.time, [c.last_time]))
            est = np.concatenate((c.estimate, [c.estimate[-1] if c.estimate.size else 0.0]))
            curves.append(
                figures.StepCurve(
                    f"{label}: {names.get(cause, cause)}",
                    time,
                    est,
                    linestyle="-" if cause == 1 else "--",
                    colour_index=[k for k, _ in arm_list].index(key),
                )
            )
    note = (
        f"{t('method', lang)}: {cif.method}; {t('population', lang)}: {t('pop_itt', lang)}. "
        f"{t('beyond_follow_up', lang)}"
    )
    for test in cif.tests:
        note += (
            f" {t('gray', lang)} ({names.get(test.cause, test.cause)}): χ² = {test.statistic:.2f}, "
            f"df = {test.df}, p = {pval(test.p_value)}."
        )
    sec.tables.append(
        Table(
            "cumulative_incidence",
            t("sec_cif", lang),
            pd.DataFrame(rows),
            note=note,
            csv=pd.DataFrame(csv_rows),
        )
    )
    x_max = float(min(use["time_months"].max(), 24.0 if data.horizon_days <= 400 else 30.0))
    sec.figures.append(
        FigureSpec(
            "cumulative_incidence",
            f"{t('sec_cif', lang)} (Aalen-Johansen); {t('pop_itt', lang)}.",
            partial(
                figures.cumulative_curves,
                curves,
                xlabel=t("months", lang),
                ylabel=t("cif_axis", lang),
                x_max=x_max,
            ),
        )
    )
    return sec, results


# ------------------------------------------------------------------ relapse


def relapse(data: AnalysisData, lang: str) -> tuple[Section, dict[str, Any]]:
    sec = Section("relapse", t("sec_relapse", lang))
    results: dict[str, Any] = {}
    itt = _population(data, "itt")
    cr = itt[(itt["cr_event"] == 1) & itt["relapse_days"].notna()]
    if cr.empty:
        sec.skip(t("nc_no_relapse_pop", lang))
        return sec, results
    sec.paragraphs.append(t("relapse_definition", lang))
    pooled = next((b for b in data.protocol.benchmarks if b.measure == "recurrence_rate"), None)
    arm_list = [(k, lab) for k, lab in arms(data, lang) if (cr["arm"] == k).any()]
    labels = dict(arm_list)
    km = KaplanMeier().fit(
        cr["relapse_months"].to_numpy(float),
        cr["relapse_event"].to_numpy(int),
        group=cr["arm"].map(labels).to_numpy(),
    )
    results["km"] = km
    rows, csv_rows, curves = [], [], []
    for key, label in arm_list:
        sub = cr[cr["arm"] == key]
        events, n = int(sub["relapse_event"].sum()), len(sub)
        res = proportion(events, n, benchmark=pooled.low if pooled else None)
        results[f"rate:{key}"] = res
        curve = km.curves_[label]
        at12 = curve.at([12.0]).iloc[0]
        rows.append(
            {
                t("arm", lang): label,
                t("relapse_rate", lang): f"{events}/{n} = {pct(res.estimate)} "
                f"({ci(res.lower, res.upper)})",
                t("relapse_ci", lang) + " (12 m)": f"{pct(at12.cumulative_incidence)} "
                f"({ci(at12.ci_lower, at12.ci_upper)})",
                t("benchmark", lang): (
                    f"{pct(pooled.low)}: p = {pval(res.p_value)}" if pooled else "–"
                ),
            }
        )
        csv_rows.append(
            {
                "arm": key,
                "population": "itt, complete responders",
                "relapses": events,
                "n": n,
                "rate": res.estimate,
                "lower": res.lower,
                "upper": res.upper,
                "method": res.method,
                "benchmark": pooled.low if pooled else None,
                "p_value": res.p_value,
                "test": res.test_method,
                "cum_incidence_12m": at12.cumulative_incidence,
                "cum_incidence_12m_lower": at12.ci_lower,
                "cum_incidence_12m_upper": at12.ci_upper,
                "km_method": curve.method,
            }
        )
        curves.append(
            figures.StepCurve(
                label, curve.time, 1 - curve.survival, 1 - curve.upper, 1 - curve.lower
            )
        )
    note = (
        f"{t('method', lang)}: Clopper-Pearson exact; exact binomial test, two-sided; "
        f"{km.method}. {t('population', lang)}: {t('pop_cr_subjects', lang)} "
        f"({t('pop_itt', lang)})."
    )
    if pooled:
        note += f" {t('source', lang)}: {pooled.source}."
    sec.tables.append(
        Table(
            "relapse",
            t("sec_relapse", lang),
            pd.DataFrame(rows),
            note=note,
            csv=pd.DataFrame(csv_rows),
        )
    )
    x_max = float(max(1.0, min(cr["relapse_months"].max(), 24.0)))
    sec.figures.append(
        FigureSpec(
            "relapse",
            f"{t('relapse_ci', lang)} (1 − Kaplan-Meier); {t('pop_cr_subjects', lang)}.",
            partial(
                figures.cumulative_curves,
                curves,
                xlabel=t("months_since_cr", lang),
                ylabel=t("relapse_ci", lang),
                x_max=x_max,
                reference_level=(
                    (pooled.low, f"{pooled.label.get(lang)} {pct(pooled.low, 0)}")
                    if pooled
                    else None
                ),
                y_max=min(
                    1.02,
                    max(0.4, *(float(np.nanmax(c.upper)) for c in curves if c.upper is not None))
                    + 0.05,
                ),
            ),
        )
    )
    return sec, results


# ------------------------------------------------------------------ subgroups and Cox


def _subgroup_levels(data: AnalysisData, lang: str) -> list[tuple[str, str, pd.Series]]:
    s = data.subjects
    out = [
        (t("sg_diagnosis", lang), "IGM", s["diagnosis"] == "igm"),
        (t("sg_diagnosis", lang), "PD", s["diagnosis"] == "pd"),
        (t("sg_infection", lang), t("yes", lang), s["infection_evidence"] == 1),
        (t("sg_infection", lang), t("no", lang), s["infection_evidence"] == 0),
        (t("sg_severity", lang), t("mild", lang), s["severity_group"] == "mild"),
        (t("sg_severity", lang), t("severe_level", lang), s["severity_group"] == "severe"),
    ]
    return out


def subgroups(data: AnalysisData, lang: str) -> tuple[Section, dict[str, Any]]:
    sec = Section("subgroups", t("sec_subgroups", lang))
    results: dict[str, Any] = {}
    s = data.subjects
    itt_mask = s["itt"]
    if not itt_mask.any():
        sec.skip(t("nc_no_subjects", lang))
        return sec, results
    arm_list = arms(data, lang)
    rows, csv_rows, forest_rows = [], [], []
    current = None
    for group, level, mask in _subgroup_levels(data, lang):
        if group != current:
            forest_rows.append(figures.ForestRow(group, math.nan, math.nan, math.nan, header=True))
            current = group
        for i, (key, label) in enumerate(arm_list):
            sub = s[itt_mask & mask & (s["arm"] == key)]
            if sub.empty:
                continue
            events, n = int(sub["cr_by_horizon"].sum()), len(sub)
            res = proportion(events, n, method="wilson")
            results[f"{group}:{level}:{key}"] = res
            name = f"  {level}" + (f" · {label}" if len(arm_list) > 1 else "")
            forest_rows.append(
                figures.ForestRow(
                    name,
                    res.estimate,
                    res.lower,
                    res.upper,
                    text=f"{events}/{n}",
                    colour=arm_colour(i),
                )
            )
            rows.append(
                {
                    t("subgroup", lang): group,
                    t("level", lang): level,
                    t("arm", lang): label,
                    t("events_n", lang): f"{events}/{n}",
                    t("estimate", lang): pct(res.estimate),
                    t("ci_wilson", lang): ci(res.lower, res.upper),
                }
            )
            csv_rows.append(
                {
                    "subgroup": group,
                    "level": level,
                    "arm": key,
                    "events": events,
                    "n": n,
                    "estimate": res.estimate,
                    "lower": res.lower,
                    "upper": res.upper,
                    "method": res.method,
                    "population": "itt",
                }
            )
    months = horizon_months(data)
    sec.tables.append(
        Table(
            "subgroups",
            t("cr_by_horizon", lang, months=months),
            pd.DataFrame(rows),
            note=f"{t('method', lang)}: Wilson score; {t('population', lang)}: "
            f"{t('pop_itt', lang)}.",
            csv=pd.DataFrame(csv_rows),
        )
    )
    sec.figures.append(
        FigureSpec(
            "subgroups_forest",
            f"{t('cr_by_horizon', lang, months=months)} (95% CI Wilson); {t('pop_itt', lang)}.",
            partial(figures.forest, forest_rows, xlabel=t("proportion_axis", lang)),
        )
    )
    _cox(data, lang, sec, results)
    return sec, results


def _cox(data: AnalysisData, lang: str, sec: Section, results: dict[str, Any]) -> None:
    s = data.subjects
    use = s[s["itt"] & s["time_months"].notna()].copy()
    # an arm without a single CR makes the likelihood monotone (hazard ratio 0): leave it out
    events_by_arm = use.groupby("arm")["cr_event"].sum()
    no_cr = [str(k) for k, v in events_by_arm.items() if v == 0]
    if no_cr:
        left_out = use[use["arm"].isin(no_cr)]
        sec.skip(
            f"{t('cox_title', lang)}: {', '.join(no_cr)}: {t('nc_no_events', lang)}",
            list(left_out["study_id"]),
        )
        use = use[~use["arm"].isin(no_cr)]
    if use.empty or use["cr_event"].sum() == 0:
        sec.skip(t("nc_cox", lang, why=t("nc_no_events", lang)))
        return
    frame = pd.DataFrame(
        {
            "time": use["time_months"].to_numpy(float),
            "event": use["cr_event"].to_numpy(int),
            "PD (vs IGM)": (use["diagnosis"] == "pd").astype(float).to_numpy(),
            f"{t('sg_infection', lang)}": use["infection_evidence"].to_numpy(float),
            f"{t('sg_severity', lang)} ≥ 6": (use["severity_score"] >= 6).astype(float).to_numpy(),
            "age (per 10 years)": use["age"].to_numpy(float) / 10,
        }
    )
    arm_list = [(k, lab) for k, lab in arms(data, lang) if k not in no_cr]
    for key, label in arm_list[1:]:
        frame[f"{label} (vs {arm_list[0][1]})"] = (use["arm"] == key).astype(float).to_numpy()
    covariates = [c for c in frame.columns[2:] if frame[c].notna().all() and frame[c].nunique() > 1]
    if not covariates:
        sec.skip(t("nc_cox", lang, why="no covariate varies"))
        return
    complete = frame.dropna(subset=covariates)
    try:
        cox = CoxPH().fit(complete, time="time", event="event", covariates=covariates)
    except (DuctalError, np.linalg.LinAlgError, ValueError) as exc:
        sec.skip(t("nc_cox", lang, why=str(exc)))
        return
    results["cox"] = cox
    summary = cox.summary
    rows = []
    for r in records_of(summary):
        rows.append(
            {
                t("covariate", lang): r["covariate"],
                t("hr", lang): num(float(r["hr"]), 2),
                "95% CI": f"{num(float(r['lower']), 2)} to {num(float(r['upper']), 2)}",
                t("p_value", lang): pval(float(r["p_value"])),
            }
        )
    lr, df, p = cox.likelihood_ratio_test
    note = t(
        "cox_note",
        lang,
        n=cox.n_,
        events=cox.n_events_,
        lr=lr,
        df=df,
        p=pval(p),
        c=cox.concordance_,
    )
    note += f" {t('method', lang)}: {cox.method}; {t('population', lang)}: {t('pop_itt', lang)}."
    try:
        zph = cox.check_assumptions()
        glob = zph[zph["covariate"] == "GLOBAL"].iloc[0]
        note += f" {t('ph_check', lang)}: GLOBAL p = {pval(float(glob['p_value']))}."
    except (DuctalError, np.linalg.LinAlgError, ValueError):
        pass
    sec.tables.append(
        Table("cox", t("cox_title", lang), pd.DataFrame(rows), note=note, csv=summary.reset_index())
    )


# ------------------------------------------------------------------ non-inferiority


def comparison(data: AnalysisData, lang: str) -> tuple[Section, dict[str, Any]] | None:
    margin = next(
        (
            e.non_inferiority_margin
            for e in data.protocol.endpoints
            if e.non_inferiority_margin is not None
        ),
        None,
    )
    if not data.protocol.is_randomised or margin is None:
        return None
    sec = Section("comparison", t("sec_comparison", lang))
    results: dict[str, Any] = {}
    arm_keys = [a.key for a in data.protocol.arms][:2]
    names = {a.key: a.label.get(lang) for a in data.protocol.arms}
    rows, csv_rows, forest_rows = [], [], []
    for which in ("itt", "pp"):
        pop = _population(data, which)
        a = pop[pop["arm"] == arm_keys[0]]
        b = pop[pop["arm"] == arm_keys[1]]
        if a.empty or b.empty:
            sec.skip(t("nc_ni_arms", lang, why=f"{_pop_label(which, lang)}: {len(a)} vs {len(b)}"))
            continue
        for method in ("wald", "newcombe"):
            res = compare_proportions(
                int(a["cr_by_horizon"].sum()),
                len(a),
                int(b["cr_by_horizon"].sum()),
                len(b),
                method=method,
                margin=margin,
            )
            results[f"{which}:{method}"] = res
            verdict = t("non_inferior", lang) if res.non_inferior else t("not_shown", lang)
            rows.append(
                {
                    t("population", lang): _pop_label(which, lang),
                    names[arm_keys[0]]: f"{res.events1}/{res.n1} ({pct(res.proportion1)})",
                    names[arm_keys[1]]: f"{res.events2}/{res.n2} ({pct(res.proportion2)})",
                    t("difference", lang): f"{num(100 * res.estimate)} pp",
                    "95% CI": ci(res.lower, res.upper, unit=" pp"),
                    t("margin", lang): f"{num(100 * margin)} pp",
                    t("p_value", lang): pval(res.p_value),
                    t("verdict", lang): verdict,
                    t("method", lang): res.method,
                }
            )
            csv_rows.append({"population": which, **res.to_dict()})
            forest_rows.append(
                figures.ForestRow(
                    f"{_pop_label(which, lang)} · {method.capitalize()}",
                    res.estimate,
                    res.lower,
                    res.upper,
                    text=f"{num(100 * res.estimate)} ({ci(res.lower, res.upper, unit='')})",
                    colour="#0072B2" if which == "itt" else "#E69F00",
                    marker="s" if method == "wald" else "o",
                )
            )
    if rows:
        note = (
            f"{t('test', lang)}: non-inferiority, one-sided Wald z-test of H0 p1 − p2 ≤ "
            f"{num(100 * margin)} pp; verdict from the lower bound of the two-sided 95% CI."
        )
        sec.tables.append(
            Table(
                "non_inferiority",
                t("sec_comparison", lang),
                pd.DataFrame(rows),
                note=note,
                csv=pd.DataFrame(csv_rows),
            )
        )
        lo = min(margin - 0.1, *(r.lower for r in forest_rows)) - 0.02
        hi = max(0.2, *(r.upper for r in forest_rows)) + 0.02
        sec.figures.append(
            FigureSpec(
                "non_inferiority",
                f"{t('difference', lang)} ({names[arm_keys[0]]} − {names[arm_keys[1]]}) "
                f"{t('margin', lang)} {num(100 * margin)} pp.",
                partial(
                    figures.forest,
                    forest_rows,
                    xlabel=t("difference_axis", lang, a=names[arm_keys[0]], b=names[arm_keys[1]]),
                    reference=margin,
                    percent=False,
                    points=True,
                    reference_label=f"{t('margin', lang)} {num(100 * margin)}",
                    x_limits=(lo, hi),
                ),
            )
        )
    return sec, results


# ------------------------------------------------------------------ adaptive looks


def adaptive(data: AnalysisData, lang: str) -> tuple[Section, dict[str, Any]] | None:
    protocol = data.protocol
    if protocol.design != "adaptive":
        return None
    sec = Section("adaptive", t("sec_adaptive", lang))
    results: dict[str, Any] = {}
    every = int(protocol.settings.get("interim_every", 30))
    threshold = float(protocol.settings.get("interim_response_threshold", 0.5))
    cutoff = float(protocol.settings.get("interim_futility_probability", 0.05))
    primary = next((e for e in protocol.endpoints if e.kind == "binary"), None)
    column = (
        "response_by_horizon" if primary and primary.event == "response_cr_pr" else "cr_by_horizon"
    )
    s = data.subjects[data.subjects["itt"]].copy()
    # an outcome is known after the horizon visit, a response, or a competing event
    known = (
        (s["last_assessment_day"] >= data.horizon_days - 30)
        | (s[column] == 1)
        | (s["status_code"] == 2)
    )
    s = s[known].sort_values(["enrolled_on", "study_id"])
    if s.empty:
        sec.skip(t("nc_no_outcomes", lang))
        return sec, results
    arm_list = arms(data, lang)
    looks = list(range(every, len(s) + 1, every))
    if not looks or looks[-1] != len(s):
        looks.append(len(s))
    rows, plot_rows = [], []
    terminated: dict[str, int] = {}
    how = "ductal.design.posterior.prob_above"
    for look_no, size in enumerate(looks, start=1):
        upto = s.iloc[:size]
        x = np.array([int(upto.loc[upto["arm"] == k, column].sum()) for k, _ in arm_list])
        n = np.array([int((upto["arm"] == k).sum()) for k, _ in arm_list])
        probs = prob_above(1.0 + x, 1.0 + n - x, threshold)
        for i, (key, label) in enumerate(arm_list):
            if key in terminated:
                decision = t("terminated_earlier", lang)
            elif n[i] > 0 and probs[i] < cutoff:
                decision = t("terminate", lang)
                terminated[key] = look_no
            else:
                decision = t("continue", lang)
            rows.append(
                {
                    t("look", lang): look_no,
                    t("with_outcome", lang): size,
                    t("arm", lang): label,
                    t("responders", lang): f"{x[i]}/{n[i]}",
                    t("posterior", lang, thr=threshold): num(float(probs[i]), 3),
                    t("decision", lang): decision,
                }
            )
            plot_rows.append(
                {
                    "look": look_no,
                    "arm": label,
                    "key": key,
                    "responders": int(x[i]),
                    "n": int(n[i]),
                    "rate": x[i] / n[i] if n[i] else math.nan,
                    "prob_above": float(probs[i]),
                    "terminated": key in terminated,
                }
            )
    results["looks"] = pd.DataFrame(plot_rows)
    results["terminated"] = terminated
    sec.paragraphs.append(t("adaptive_rule", lang, every=every, thr=threshold, cut=cutoff, how=how))
    sec.tables.append(
        Table(
            "interim_looks",
            t("sec_adaptive", lang),
            pd.DataFrame(rows),
            note=f"{t('population', lang)}: {t('pop_itt', lang)}; "
            f"{'CR or PR' if column == 'response_by_horizon' else 'CR'} "
            f"≤ {data.horizon_days + data.horizon_grace_days} d.",
            csv=pd.DataFrame(plot_rows),
        )
    )
    sec.figures.append(
        FigureSpec(
            "interim_looks",
            t("sec_adaptive", lang),
            partial(
                figures.interim_looks,
                pd.DataFrame(plot_rows),
                threshold=threshold,
                cutoff=cutoff,
                arm_names=[lab for _, lab in arm_list],
                labels={
                    "rate": t("response_axis", lang),
                    "prob": t("posterior", lang, thr=threshold),
                    "look": t("look", lang),
                },
            ),
        )
    )
    return sec, results
