"""Code checks: bandit finds nothing that has not been reviewed, and no secret is committed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Every bandit finding in src/ that was read and judged harmless, with the reason. B101 (assert)
# is skipped as a class: each assert in src/ narrows an Optional for mypy; none checks input.
REVIEWED: dict[tuple[str, str], tuple[int, str]] = {
    ("src/ductal/protocols/loader.py", "B506"): (
        1,
        "yaml.load with a SafeLoader subclass (libyaml CSafeLoader + duplicate-key check)",
    ),
    ("src/ductal/procedure/_render.py", "B704"): (
        2,
        "Markup of a constant font stack, and of text with quotes, backslashes, <, >, { and } "
        "removed for a CSS string",
    ),
    ("src/ductal/reports/build.py", "B704"): (
        1,
        "Markup of pandas DataFrame.to_html(escape=True): every cell is escaped first",
    ),
    ("src/ductal/web/auth.py", "B105"): (1, "'dtl_' is the public prefix of API tokens"),
    ("src/ductal/demo.py", "B105"): (
        1,
        "the published password of the synthetic demo's users (demo databases only)",
    ),
}

SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS access key": re.compile(r"AKIA[0-9A-Z]{16}"),
    "GitHub token": re.compile(r"gh[pousr]_[A-Za-z0-9]{36}"),
    "Slack token": re.compile(r"xox[baprs]-[A-Za-z0-9-]{10,}"),
    "Fernet key": re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}=(?![A-Za-z0-9_=-])"),
    "password in a URL": re.compile(r"://[^/\s:@\"']+:([^/\s@\"']+)@"),
}
PLACEHOLDER_PASSWORDS = {"pw", "password", "secret", "changeme", "pass", "xxx", "PASSWORD"}
SECRET_FILES = re.compile(r"(\.(key|pem|p12|pfx|env)$|(^|/)\.env(\.|$)|id_rsa|vault\.key)")


def find_secrets(name: str, text: str) -> list[str]:
    """Return a description of each secret-looking string in ``text``."""
    found = []
    for label, pattern in SECRET_PATTERNS.items():
        for match in pattern.finditer(text):
            if label == "password in a URL" and match.group(1) in PLACEHOLDER_PASSWORDS:
                continue
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{name}:{line}: {label}")
    return found


def test_secret_search_finds_a_planted_key() -> None:
    from cryptography.fernet import Fernet

    # assembled at run time, so that this file itself holds nothing the scan would flag
    begin = "-----BEGIN RSA " + "PRIVATE KEY-----"
    password = "Tr0ub4" + "dor&3"
    url = "postgresql+psycopg://ductal:" + password + "@db/ductal"
    planted = f"DUCTAL_VAULT_KEY={Fernet.generate_key().decode()}\nurl = {url}\n{begin}\n"
    kinds = [f.split(": ", 1)[1] for f in find_secrets("planted", planted)]
    assert kinds == ["private key", "Fernet key", "password in a URL"]


def test_no_secret_in_the_repository() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    names = [n.decode() for n in listed if n]
    assert [n for n in names if SECRET_FILES.search(n)] == []
    found: list[str] = []
    for name in names:
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        blob = path.read_bytes()
        if b"\0" in blob[:4096]:
            continue  # binary
        found += find_secrets(name, blob.decode("utf-8", errors="replace"))
    assert found == []


@pytest.mark.slow
def test_bandit_finds_nothing_unreviewed() -> None:
    bandit = Path(sys.executable).with_name("bandit")
    if not bandit.exists():
        pytest.skip("bandit is not installed (pip install -e '.[dev]')")
    done = subprocess.run(
        [str(bandit), "-r", "src", "-f", "json", "-q", "--skip", "B101"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(done.stdout)
    assert not report["errors"], report["errors"]
    counts = Counter((r["filename"], r["test_id"]) for r in report["results"])
    unreviewed = {k: n for k, n in counts.items() if k not in REVIEWED or n > REVIEWED[k][0]}
    details = [
        f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}"
        for r in report["results"]
        if (r["filename"], r["test_id"]) in unreviewed
    ]
    assert not unreviewed, "\n".join(details)
