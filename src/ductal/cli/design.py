"""``ductal design``: sample sizes, two-stage designs, boundaries and adaptive simulation."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from ductal.design.boundaries import BOUNDARY_TYPES, group_sequential
from ductal.design.runner import Progress
from ductal.design.runner import simulate as run_simulation
from ductal.design.simon import simon as simon_design
from ductal.design.single_arm import single_arm as single_arm_design
from ductal.design.spec import builtin_names, load_design
from ductal.design.two_arm import two_arm as two_arm_design
from ductal.errors import Problem, ValidationError

app = typer.Typer(help="Design and simulate trials.", no_args_is_help=True)

JSON_OPT = typer.Option(False, "--json", help="Print the result as JSON.")


def _emit_json(data: dict[str, Any]) -> None:
    typer.echo(json.dumps(data, indent=2))


@app.command("single-arm")
def single_arm(
    p0: float = typer.Option(..., "--p0", help="Response rate under H0 (uninteresting)."),
    p1: float = typer.Option(..., "--p1", help="Response rate under H1 (worth pursuing)."),
    alpha: float = typer.Option(0.05, "--alpha", help="One-sided type I error at p0."),
    power: float = typer.Option(0.8, "--power", help="Power at p1."),
    nmax: int | None = typer.Option(None, "--nmax", help="Largest n to search and list."),
    as_json: bool = JSON_OPT,
) -> None:
    """Exact binomial single-arm design: smallest n and critical count (reject if X > r)."""
    result = single_arm_design(p0, p1, alpha, power, nmax=nmax)
    if as_json:
        _emit_json(result.to_dict())
        return
    d = result.design
    typer.echo(f"Exact single-arm design, p0={p0} p1={p1} alpha<={alpha} power>={power}")
    typer.echo(
        f"  n = {d.n}, declare ineffective if <= {d.r} respond (need {d.critical}); "
        f"alpha = {d.alpha:.4f}, power = {d.power:.4f}"
    )
    if result.n_stable is not None and result.n_stable != d.n:
        typer.echo(f"  every n from {result.n_stable} to {result.nmax} is also feasible")
    typer.echo("  feasible n (saw-tooth): " + ", ".join(str(t.n) for t in result.feasible[:25]))


@app.command("simon")
def simon(
    p0: float = typer.Option(..., "--p0", help="Response rate under H0."),
    p1: float = typer.Option(..., "--p1", help="Response rate under H1."),
    alpha: float = typer.Option(0.05, "--alpha", help="One-sided type I error at p0."),
    beta: float = typer.Option(0.2, "--beta", help="Type II error at p1 (1 - power)."),
    nmax: int = typer.Option(100, "--nmax", help="Largest total sample size searched."),
    as_json: bool = JSON_OPT,
) -> None:
    """Simon two-stage designs: optimal, minimax and the admissible designs between them."""
    result = simon_design(p0, p1, alpha, beta, nmax=nmax)
    if as_json:
        _emit_json(result.to_dict())
        return
    typer.echo(f"Simon two-stage designs, p0={p0} p1={p1} alpha={alpha} beta={beta} nmax={nmax}")
    typer.echo(
        f"  {'design':<24}{'r1/n1':>8}{'r/n':>8}{'EN0':>8}{'PET0':>7}{'alpha':>8}{'power':>8}"
    )
    rows = [("optimal", result.optimal), ("minimax", result.minimax)]
    rows += [(f"admissible q={a.q_low:.2f}-{a.q_high:.2f}", a.design) for a in result.admissible]
    for name, d in rows:
        typer.echo(
            f"  {name:<24}{f'{d.r1}/{d.n1}':>8}{f'{d.r}/{d.n}':>8}{d.en0:>8.2f}"
            f"{d.pet0:>7.3f}{d.alpha:>8.4f}{d.power:>8.4f}"
        )


@app.command("two-arm")
def two_arm(
    p1: float = typer.Option(..., "--p1", help="Expected rate in the experimental arm."),
    p2: float = typer.Option(..., "--p2", help="Expected rate in the reference arm."),
    margin: float = typer.Option(
        0.0, "--margin", help="Non-inferiority margin on p1 - p2 (0 for superiority)."
    ),
    alpha: float = typer.Option(0.025, "--alpha", help="One-sided type I error."),
    power: float = typer.Option(0.8, "--power", help="Power."),
    dropout: float = typer.Option(0.0, "--dropout", help="Expected fraction lost, in [0, 1)."),
    method: str = typer.Option(
        "wald", "--method", help="wald (unpooled) or farrington-manning (as rpact)."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Sample size for two proportions, superiority or non-inferiority, with dropout."""
    if method not in ("wald", "farrington-manning"):
        raise ValidationError(
            "invalid two-arm sample size",
            problems=[Problem("method", f"must be wald or farrington-manning, got {method}")],
        )
    result = two_arm_design(
        p1,
        p2,
        margin=margin,
        alpha=alpha,
        power=power,
        dropout=dropout,
        method=method,  # type: ignore[arg-type]
    )
    if as_json:
        _emit_json(result.to_dict())
        return
    typer.echo(
        f"Two-arm {result.hypothesis} ({method}), p1={p1} p2={p2} margin={margin} "
        f"one-sided alpha={alpha} power={power}"
    )
    typer.echo(f"  evaluable: {result.n_evaluable_per_arm} per arm (exact {result.n_exact:.2f})")
    typer.echo(
        f"  with {dropout:.0%} dropout: {result.n_per_arm} per arm, {result.n_total} in total"
    )


@app.command("boundaries")
def boundaries(
    looks: int = typer.Option(..., "--looks", help="Number of analyses, the last one final."),
    alpha: float = typer.Option(0.025, "--alpha", help="One-sided overall type I error."),
    beta: float = typer.Option(0.2, "--beta", help="Type II error (1 - power)."),
    kind: str = typer.Option(
        "obf", "--type", help="obf, pocock, asOF or asP (Lan-DeMets spending)."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Group-sequential efficacy boundaries with stopping probabilities and inflation."""
    if kind not in BOUNDARY_TYPES:
        raise ValidationError(
            "invalid group-sequential design",
            problems=[Problem("type", f"must be one of {', '.join(BOUNDARY_TYPES)}, got {kind}")],
        )
    d = group_sequential(looks, alpha, beta, kind)
    if as_json:
        _emit_json(d.to_dict())
        return
    typer.echo(f"Group-sequential design {kind}, {looks} looks, alpha={alpha} beta={beta}")
    typer.echo(
        f"  {'look':>4}{'info':>7}{'z crit':>9}{'nominal p':>11}{'alpha spent':>13}"
        f"{'P(stop|H1)':>12}"
    )
    for k in range(looks):
        typer.echo(
            f"  {k + 1:>4}{d.information_rates[k]:>7.3f}{d.critical_values[k]:>9.4f}"
            f"{d.stage_levels[k]:>11.5f}{d.alpha_spent[k]:>13.5f}"
            f"{d.rejection_probabilities_h1[k]:>12.4f}"
        )
    typer.echo(f"  maximum sample size inflation: {d.inflation_factor:.4f} x fixed design")
    typer.echo(
        f"  expected size / fixed: H0 {d.expected_n_h0:.4f}, midway {d.expected_n_h01:.4f}, "
        f"H1 {d.expected_n_h1:.4f}"
    )


@contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Progress | None]:
    """Yield a callback advancing a rich progress bar on stderr, or None when disabled."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("simulating", total=total)
        yield lambda done: bar.advance(task, done)


@app.command("list")
def list_designs() -> None:
    """List the shipped adaptive designs (use them as builtin:NAME)."""
    for name in builtin_names():
        design = load_design(f"builtin:{name}")
        typer.echo(f"builtin:{name:<28} {design.description or ''}")


@app.command("simulate")
def simulate(
    design: str = typer.Argument(..., help="A design YAML file, or builtin:NAME (see 'list')."),
    trials: int = typer.Option(10_000, "--trials", help="Simulated trials per scenario."),
    seed: int = typer.Option(1, "--seed", help="Seed; the same seed gives the same result."),
    workers: int | None = typer.Option(
        None, "--workers", help="Run on a local Dask cluster with N worker processes."
    ),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Run on an existing Dask cluster, e.g. tcp://host:8786."
    ),
    draws: int | None = typer.Option(
        None, "--draws", help="Monte Carlo posterior draws instead of numerical integration."
    ),
    scenario: list[str] | None = typer.Option(
        None, "--scenario", help="Simulate only this scenario (repeatable)."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Simulate an adaptive design: operating characteristics under each scenario."""
    if workers is not None and scheduler is not None:
        raise ValidationError(
            "invalid simulation settings",
            problems=[Problem("workers", "give --workers or --scheduler, not both")],
        )
    spec = load_design(design)
    n_scen = len(scenario) if scenario else len(spec.scenarios)
    show = not as_json and sys.stderr.isatty()
    with _progress_bar(trials * n_scen, show) as progress:
        result = run_simulation(
            spec,
            trials=trials,
            seed=seed,
            draws=draws,
            workers=workers,
            scheduler=scheduler,
            scenarios=scenario,
            progress=progress,
        )
    if as_json:
        _emit_json(result)
        return
    typer.echo(
        f"{result['design']}: {trials} trials per scenario, seed {seed}, "
        f"posterior by {result['posterior']}"
    )
    for sc in result["scenarios"]:
        label = "type I error" if sc["null"] else "power"
        typer.echo(
            f"\n[{sc['scenario']}] {label} {sc['p_success']:.4f} (MC SE {sc['mc_se']:.4f}); "
            f"expected N {sc['expected_n_total']:.1f}"
        )
        stops = ", ".join(f"{k} {v:.3f}" for k, v in sc["p_stop_reason"].items() if v > 0)
        typer.echo(f"  stopped: {stops}")
        typer.echo(
            f"  {'arm':<10}{'rate':>6}{'select':>8}{'drop':>7}{'effic.':>8}{'E[n]':>8}"
            f"{'n 5-95%':>10}{'bias':>8}"
        )
        for arm in sc["arms"]:
            q = arm["n_quantiles"]
            bias = "" if arm["bias"] is None else f"{arm['bias']:+.3f}"
            typer.echo(
                f"  {arm['arm']:<10}{arm['true_rate']:>6.2f}{arm['p_selected']:>8.3f}"
                f"{arm['p_dropped']:>7.3f}{arm['p_efficacious']:>8.3f}{arm['expected_n']:>8.1f}"
                f"{str(q['q05']) + '-' + str(q['q95']):>10}{bias:>8}"
            )


# `design interim` reads the trial database; it is written with the randomisation commands.
from ductal.cli.randomise import interim as _interim  # noqa: E402

app.command("interim")(_interim)
