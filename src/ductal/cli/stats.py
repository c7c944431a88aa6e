"""``ductal stats``: run the statistics engine on any CSV file."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd
import typer

from ductal.errors import DuctalError
from ductal.stats._json import jsonable
from ductal.stats.comparison import compare_proportions
from ductal.stats.competing_risks import FineGray, cumulative_incidence
from ductal.stats.cox import CoxPH
from ductal.stats.csvdata import column as _col
from ductal.stats.csvdata import read_csv
from ductal.stats.logistic import LogisticRegression
from ductal.stats.proportions import proportion
from ductal.stats.survival import KaplanMeier

app = typer.Typer(help="Statistics that agree with R, on any CSV file.", no_args_is_help=True)


class Interval(StrEnum):
    clopper_pearson = "clopper-pearson"
    wilson = "wilson"
    wilson_cc = "wilson-cc"


class Alternative(StrEnum):
    two_sided = "two-sided"
    greater = "greater"
    less = "less"


class DiffMethod(StrEnum):
    wald = "wald"
    newcombe = "newcombe"


class ConfType(StrEnum):
    log = "log"
    log_log = "log-log"
    plain = "plain"


JSON_OPTION = typer.Option(False, "--json", help="Print JSON (missing values are null).")
CONF_LEVEL = typer.Option(0.95, "--conf-level", help="Confidence level of the intervals.")
DATA_ARG = typer.Argument(..., metavar="DATA.csv", help="CSV file with a header row.")


@contextmanager
def _reported() -> Iterator[None]:
    """Turn a domain error into one line on stderr and exit status 1."""
    try:
        yield
    except DuctalError as exc:
        detail = "; ".join(str(p) for p in exc.problems) or exc.message
        typer.echo(f"error: {detail} ({exc.message})", err=True)
        raise typer.Exit(code=1) from None


def _emit(as_json: bool, data: Callable[[], Any], text: Callable[[], list[str]]) -> None:
    if as_json:
        typer.echo(json.dumps(jsonable(data()), indent=2, allow_nan=False, ensure_ascii=False))
    else:
        typer.echo("\n".join(text()))


def _columns(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


def _times(value: str | None) -> list[float]:
    if not value:
        return []
    try:
        return [float(t) for t in _columns(value)]
    except ValueError:
        raise typer.BadParameter(f"expected numbers separated by commas, got {value!r}") from None


def _pct(x: float | None, digits: int = 1) -> str:
    return "NA" if x is None or pd.isna(x) else f"{100 * x:.{digits}f}%"


def _num(x: Any, digits: int = 4) -> str:
    return "NA" if x is None or pd.isna(x) else f"{x:.{digits}g}"


def _frame(df: pd.DataFrame) -> list[str]:
    return df.to_string(index=False, float_format=lambda x: f"{x:.6g}", na_rep="NA").splitlines()


def _with_at(result: dict[str, Any], at_table: pd.DataFrame | None) -> dict[str, Any]:
    """The result, plus the estimates at the requested times under "at" when there are any."""
    return result if at_table is None else {**result, "at": at_table}


def _at_lines(at_table: pd.DataFrame | None) -> list[str]:
    return [] if at_table is None else ["", *_frame(at_table)]


@app.command("proportion")
def proportion_cmd(
    events: int = typer.Option(..., "--events", help="Number of subjects with the outcome."),
    n: int = typer.Option(..., "--n", help="Number of subjects."),
    benchmark: float | None = typer.Option(
        None, "--benchmark", help="Rate to test against with the exact binomial test, e.g. 0.63."
    ),
    alternative: Alternative = typer.Option(
        Alternative.two_sided, "--alternative", help="Side of the test against the benchmark."
    ),
    method: Interval = typer.Option(Interval.clopper_pearson, "--method", help="Interval."),
    conf_level: float = CONF_LEVEL,
    as_json: bool = JSON_OPTION,
) -> None:
    """A proportion with its exact or Wilson interval, optionally tested against a rate."""
    with _reported():
        r = proportion(
            events,
            n,
            method=method.value,
            conf_level=conf_level,
            benchmark=benchmark,
            alternative=alternative.value,
        )

    def text() -> list[str]:
        lines = [
            f"{r.events}/{r.n} = {_pct(r.estimate)} "
            f"({r.conf_level:.0%} CI {_pct(r.lower)} to {_pct(r.upper)}), {r.method}"
        ]
        if r.benchmark is not None:
            lines.append(f"{r.test_method} against {_pct(r.benchmark)}: p = {_num(r.p_value)}")
        return lines

    _emit(as_json, r.to_dict, text)


@app.command("compare")
def compare_cmd(
    events1: int = typer.Option(..., "--events1", help="Events in arm 1 (e.g. lavage)."),
    n1: int = typer.Option(..., "--n1", help="Subjects in arm 1."),
    events2: int = typer.Option(..., "--events2", help="Events in arm 2 (e.g. steroid)."),
    n2: int = typer.Option(..., "--n2", help="Subjects in arm 2."),
    margin: float | None = typer.Option(
        None,
        "--margin",
        help="Non-inferiority margin for p1 - p2 as a proportion, e.g. -0.15.",
        allow_dash=True,
    ),
    method: DiffMethod = typer.Option(
        DiffMethod.wald, "--method", help="Interval for the risk difference."
    ),
    conf_level: float = CONF_LEVEL,
    as_json: bool = JSON_OPTION,
) -> None:
    """Arm 1 against arm 2: risk difference, risk ratio, odds ratio, non-inferiority."""
    with _reported():
        r = compare_proportions(
            events1,
            n1,
            events2,
            n2,
            method=method.value,
            conf_level=conf_level,
            margin=margin,
        )

    def text() -> list[str]:
        lines = [
            f"arm 1: {r.events1}/{r.n1} = {_pct(r.proportion1)}; "
            f"arm 2: {r.events2}/{r.n2} = {_pct(r.proportion2)}",
            *_frame(r.summary),
        ]
        if r.margin is not None:
            verdict = "non-inferior" if r.non_inferior else "non-inferiority not shown"
            lines.append(
                f"margin {100 * r.margin:.1f} pp: {verdict} "
                f"(lower bound {100 * r.lower:.1f} pp; one-sided p = {_num(r.p_value)})"
            )
        else:
            lines.append(f"{r.test_method}: p = {_num(r.p_value)}")
        return lines

    _emit(as_json, r.to_dict, text)


@app.command("km")
def km_cmd(
    data: Path = DATA_ARG,
    time: str = typer.Option(..., "--time", help="Column with the follow-up time."),
    event: str = typer.Option(..., "--event", help="Column with 1 = event, 0 = censored."),
    group: str | None = typer.Option(None, "--group", help="Column to split the curves by."),
    strata: str | None = typer.Option(
        None, "--strata", help="Column to stratify the log-rank test by."
    ),
    conf_type: ConfType = typer.Option(ConfType.log, "--conf-type", help="Pointwise CI type."),
    at: str | None = typer.Option(
        None, "--at", help="Times to report estimates at, e.g. 3,6,12 (1 - S is given too)."
    ),
    curve: bool = typer.Option(False, "--curve", help="Also print every step of the curves."),
    conf_level: float = CONF_LEVEL,
    as_json: bool = JSON_OPTION,
) -> None:
    """Kaplan-Meier curves with median and CI, log-rank test when grouped (as R survfit)."""
    times = _times(at)
    with _reported():
        df = read_csv(data)
        km = KaplanMeier(conf_type=conf_type.value, conf_level=conf_level)
        km.fit(
            _col(df, time),
            _col(df, event),
            None if group is None else _col(df, group),
            strata=None if strata is None else _col(df, strata),
            time_field=f"column {time}",
            event_field=f"column {event}",
            group_field=f"column {group}",
        )
        at_table = km.at(times) if times else None

    def text() -> list[str]:
        lines = [km.method, *_frame(km.summary.drop(columns="method"))]
        lines += _at_lines(at_table)
        if curve:
            for c in km.curves_.values():
                lines += ["", f"{c.name}:", *_frame(c.table)]
        if km.logrank_ is not None:
            lr = km.logrank_
            lines.append(
                f"{lr.method}: chi-square {lr.statistic:.4g} on {lr.df} df, p = {_num(lr.p_value)}"
            )
        return lines

    _emit(as_json, lambda: _with_at(km.to_dict(), at_table), text)


@app.command("cuminc")
def cuminc_cmd(
    data: Path = DATA_ARG,
    time: str = typer.Option(..., "--time", help="Column with the follow-up time."),
    status: str = typer.Option(
        ..., "--status", help="Column with 0 = censored and a code per cause (1, 2, ...)."
    ),
    cause: list[int] = typer.Option(
        [], "--cause", help="Cause code to report (repeatable); all causes by default."
    ),
    group: str | None = typer.Option(None, "--group", help="Column to split the curves by."),
    strata: str | None = typer.Option(None, "--strata", help="Column to stratify Gray's test by."),
    at: str | None = typer.Option(None, "--at", help="Times to report estimates at, e.g. 3,6,12."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Cumulative incidence with competing risks and Gray's test (as cmprsk::cuminc)."""
    times = _times(at)
    with _reported():
        df = read_csv(data)
        result = cumulative_incidence(
            _col(df, time),
            _col(df, status),
            None if group is None else _col(df, group),
            strata=None if strata is None else _col(df, strata),
            causes=cause or None,
            time_field=f"column {time}",
            status_field=f"column {status}",
            group_field=f"column {group}",
        )
        at_table = result.at(times) if times else None

    def text() -> list[str]:
        lines = [result.method, *_frame(result.summary)]
        lines += _at_lines(at_table)
        for t in result.tests:
            lines.append(
                f"{t.method}, cause {t.cause}: chi-square {t.statistic:.4g} on {t.df} df, "
                f"p = {_num(t.p_value)}"
            )
        return lines

    _emit(as_json, lambda: _with_at(result.to_dict(), at_table), text)


@app.command("cox")
def cox_cmd(
    data: Path = DATA_ARG,
    time: str = typer.Option(..., "--time", help="Column with the follow-up time."),
    event: str = typer.Option(..., "--event", help="Column with 1 = event, 0 = censored."),
    covariates: str = typer.Option(
        ..., "--covariates", help="Numeric covariate columns, separated by commas."
    ),
    conf_level: float = CONF_LEVEL,
    as_json: bool = JSON_OPTION,
) -> None:
    """Cox proportional hazards (Efron ties), with the cox.zph check of proportionality."""
    with _reported():
        df = read_csv(data)
        cox = CoxPH(conf_level=conf_level).fit(
            df, time=time, event=event, covariates=_columns(covariates)
        )
        zph = cox.check_assumptions()

    def payload() -> dict[str, Any]:
        return {**cox.to_dict(), "proportional_hazards": jsonable(zph)}

    def text() -> list[str]:
        lrt, df_, p = cox.likelihood_ratio_test
        return [
            f"{cox.method}; n = {cox.n_}, events = {cox.n_events_}",
            *_frame(cox.summary),
            f"likelihood ratio test: {lrt:.4g} on {df_} df, p = {_num(p)}; "
            f"concordance {cox.concordance_:.4f}",
            "",
            "proportional hazards (scaled Schoenfeld residuals, as cox.zph):",
            *_frame(zph),
        ]

    _emit(as_json, payload, text)


@app.command("finegray")
def finegray_cmd(
    data: Path = DATA_ARG,
    time: str = typer.Option(..., "--time", help="Column with the follow-up time."),
    status: str = typer.Option(
        ..., "--status", help="Column with 0 = censored and a code per cause (1, 2, ...)."
    ),
    cause: int = typer.Option(1, "--cause", help="Code of the cause of interest."),
    covariates: str = typer.Option(
        ..., "--covariates", help="Numeric covariate columns, separated by commas."
    ),
    conf_level: float = CONF_LEVEL,
    as_json: bool = JSON_OPTION,
) -> None:
    """Fine-Gray subdistribution hazards regression (as cmprsk::crr)."""
    with _reported():
        df = read_csv(data)
        fg = FineGray(cause=cause, conf_level=conf_level).fit(
            df, time=time, status=status, covariates=_columns(covariates)
        )

    def text() -> list[str]:
        return [
            f"{fg.method}; cause {fg.cause}, n = {fg.n_}, events = {fg.n_events_}",
            *_frame(fg.summary),
        ]

    _emit(as_json, fg.to_dict, text)


@app.command("logistic")
def logistic_cmd(
    data: Path = DATA_ARG,
    outcome: str = typer.Option(..., "--outcome", help="Column with the 0/1 outcome (e.g. CR)."),
    covariates: str = typer.Option(
        ..., "--covariates", help="Numeric covariate columns, separated by commas."
    ),
    conf_level: float = CONF_LEVEL,
    as_json: bool = JSON_OPTION,
) -> None:
    """Logistic regression: odds ratios with Wald intervals (as R glm)."""
    with _reported():
        df = read_csv(data)
        lr = LogisticRegression(conf_level=conf_level).fit(
            df, outcome=outcome, covariates=_columns(covariates)
        )

    def text() -> list[str]:
        return [f"{lr.method}; n = {lr.n_}", *_frame(lr.summary)]

    _emit(as_json, lr.to_dict, text)
