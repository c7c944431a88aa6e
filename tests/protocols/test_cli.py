"""``ductal protocols`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ductal.cli import main
from ductal.cli.protocols import app
from ductal.protocols.loader import builtin_protocol

runner = CliRunner()


def test_list() -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:5] == ["id", "version", "design", "arms", "target"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["lavage-vs-steroid-ni"][1:5] == ["1.0.0", "randomised", "lavage,steroid", "140"]
    assert rows["lavage-observational"][2:5] == ["single_arm", "lavage", "32"]
    assert set(rows) == {"lavage-observational", "lavage-vs-steroid-ni", "refractory-igm-adaptive"}


def test_list_json_in_chinese() -> None:
    result = runner.invoke(app, ["list", "--json", "--lang", "zh"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    adaptive = next(d for d in data if d["id"] == "refractory-igm-adaptive")
    assert adaptive["arms"] == ["a_supportive", "b_prednisolone", "c_methotrexate"]
    assert adaptive["title"] == builtin_protocol("refractory-igm-adaptive").title.zh


def test_show_text() -> None:
    result = runner.invoke(app, ["show", "lavage-vs-steroid-ni"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "registration: NCT03724903" in out
    assert "stratum severity: screening.severity_group in mild, severe" in out
    assert "randomisation: permuted_blocks, block sizes 4, 6" in out
    lavage_row = next(line for line in out.splitlines() if line.strip().startswith("lavage  "))
    assert lavage_row.split()[1:7] == ["treatment", "0", "every", "2", "d", "×7"]
    assert "±1" in lavage_row
    age_row = next(line for line in out.splitlines() if line.strip().startswith("age "))
    assert age_row.split()[:5] == ["age", "integer", "years", "16–70", "yes"]
    assert "[pathology_confirmed] = 1" in out  # branching shown
    assert "NI margin -0.15" in out


def test_show_chinese_labels() -> None:
    result = runner.invoke(app, ["show", "lavage-observational", "--lang", "zh"])
    assert result.exit_code == 0, result.output
    assert "乳管冲洗治疗记录" in result.output
    assert "Ductal lavage session" not in result.output


def test_show_json_of_a_file(tmp_path: Path) -> None:
    doc = builtin_protocol("lavage-observational").model_dump(mode="json")
    doc["id"] = "my-copy"
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    result = runner.invoke(app, ["show", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["id"] == "my-copy"
    baseline = next(f for f in data["forms"] if f["key"] == "baseline")
    organism = next(f for f in baseline["fields"] if f["key"] == "organism")
    assert organism["show_if"] == "[culture] = 'positive'"
    assert organism["required"] is True
    assert [e["key"] for e in data["schedule"]][:3] == ["screening", "baseline", "lavage"]


def test_check_ok(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump(builtin_protocol("refractory-igm-adaptive").model_dump(mode="json")),
        encoding="utf-8",
    )
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: refractory-igm-adaptive 1.0.0 (3 arm(s)")


def test_check_lists_every_problem(tmp_path: Path) -> None:
    doc = builtin_protocol("lavage-observational").model_dump(mode="json")
    doc["schedule"][0]["forms"] = ["screening", "nothing"]
    doc["endpoints"][0]["event"] = "cure"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == f"{path}: 2 problem(s) in the protocol definition:"
    assert lines[1] == "  schedule[0].forms[1]: no form 'nothing' in forms"
    assert lines[2].startswith("  endpoints[0].event: unknown event 'cure'")


def test_check_yaml_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("id: x\n  version: [\n", encoding="utf-8")
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 1
    assert "<document>: line 2, column" in result.output


def test_unknown_protocol_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["protocols", "show", "no-such-protocol"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 'no-such-protocol' is neither a protocol file nor a built-in")


@pytest.mark.parametrize("command", ["list", "show", "check"])
def test_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
