"""Adaptive design files: every problem is reported with its path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from ductal.design.spec import builtin_names, load_design, parse_design
from ductal.errors import NotFound, ValidationError

BASE: dict[str, Any] = {
    "name": "three-arm",
    "arms": [{"id": "A"}, {"id": "B"}, {"id": "C"}],
    "looks": [30, 60, 90],
    "rules": {"inadequate_response": {"threshold": 0.5, "bound": 0.1}},
    "scenarios": [
        {"name": "null", "rates": {"A": 0.5, "B": 0.5, "C": 0.5}},
        {"name": "alt", "rates": {"A": 0.3, "B": 0.5, "C": 0.7}},
    ],
}


def _fields(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as err:
        parse_design(data)
    return [p.field for p in err.value.problems]


def test_valid_design_parses() -> None:
    design = parse_design(BASE)
    assert design.arm_ids == ["A", "B", "C"]
    assert design.is_null(design.scenarios[0]) and not design.is_null(design.scenarios[1])


def test_missing_rate_is_reported_with_its_path() -> None:
    data = copy.deepcopy(BASE)
    del data["scenarios"][1]["rates"]["C"]
    assert _fields(data) == ["scenarios[1].rates.C"]


def test_looks_must_increase() -> None:
    data = copy.deepcopy(BASE)
    data["looks"] = [30, 30, 20]
    assert _fields(data) == ["looks[1]", "looks[2]"]


def test_every_problem_is_reported_at_once() -> None:
    data = copy.deepcopy(BASE)
    data["rules"]["inadequate_response"]["bound"] = 1.5
    data["arms"][1]["prior"] = {"a": -1, "b": 1}
    assert sorted(_fields(data)) == ["arms[1].prior.a", "rules.inadequate_response.bound"]


def test_semantic_problems() -> None:
    data = copy.deepcopy(BASE)
    data["arms"].append({"id": "A"})
    data["scenarios"][0]["rates"]["D"] = 0.5
    data["scenarios"][1]["rates"]["B"] = 1.2
    data["allocation"] = {"type": "response-adaptive", "min_probability": 0.4}
    assert sorted(_fields(data)) == [
        "allocation.min_probability",
        "arms[3].id",
        "scenarios[0].rates.D",
        "scenarios[1].rates.B",
    ]


def test_single_arm_needs_efficacy_and_no_comparisons() -> None:
    data = {
        "name": "one",
        "arms": [{"id": "T"}],
        "looks": [20],
        "rules": {"superiority": {"bound": 0.99}},
        "scenarios": [{"name": "s", "rates": {"T": 0.5}}],
    }
    assert sorted(_fields(data)) == ["rules.efficacy", "rules.superiority"]


def test_noninferiority_arms_must_exist() -> None:
    data = copy.deepcopy(BASE)
    data["rules"] = {"noninferiority": {"arm": "A", "reference": "Z", "margin": 0.1, "bound": 0.9}}
    assert _fields(data) == ["rules.noninferiority.reference"]


def test_builtins_load() -> None:
    names = builtin_names()
    assert names == ["lavage-pilot", "lavage-vs-steroid-ni", "refractory-igm-adaptive"]
    for name in names:
        design = load_design(f"builtin:{name}")
        assert design.name == name


def test_file_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_design(path).name == "three-arm"
    with pytest.raises(NotFound):
        load_design(tmp_path / "absent.yaml")
    with pytest.raises(NotFound):
        load_design("builtin:absent")
    path.write_text("arms: [unclosed")
    with pytest.raises(ValidationError):
        load_design(path)
