"""Interface translations: one JSON file per language in ``translations/`` (en, zh-Hans).

Protocol content (form titles, field labels, choices) is translated in the protocol itself;
these files translate the application's own words.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

LANGUAGES = ("en", "zh-Hans")


def load_translations() -> dict[str, dict[str, str]]:
    """Return every language's messages by key."""
    folder = resources.files("ductal.web").joinpath("translations")
    return {
        lang: json.loads(folder.joinpath(f"{lang}.json").read_text(encoding="utf-8"))
        for lang in LANGUAGES
    }


class Translator:
    """``t(key, **values)`` for one language, falling back to English and then to the key."""

    def __init__(self, messages: dict[str, dict[str, str]], lang: str) -> None:
        self.lang = lang if lang in messages else "en"
        self._own = messages.get(self.lang, {})
        self._en = messages.get("en", {})

    def __call__(self, key: str, **values: Any) -> str:
        text = self._own.get(key) or self._en.get(key) or key
        return text.format(**values) if values else text

    def message(self, text: str | None) -> str:
        """Return a message from the core (a problem, a refusal) in this language when known."""
        if not text:
            return ""
        known = self._own.get(f"msg:{text}")
        if known:
            return known
        if self.lang == "zh-Hans":
            for pattern, template in _ZH_PATTERNS:
                match = pattern.fullmatch(text)
                if match:
                    return template.format(*match.groups())
        return text


_ZH_PATTERNS = [
    (re.compile(r"your role does not allow this \((.+)\)"), "您的角色无权执行此操作（{0}）"),
    (re.compile(r"no subject '(.+)'"), "没有受试者 {0}"),
    (re.compile(r"there is nothing at (.+)"), "{0} 不存在"),
    (re.compile(r"must be at least (\S+)"), "不得小于 {0}"),
    (re.compile(r"must be at most (\d+) characters"), "不得超过 {0} 个字符"),
    (re.compile(r"must be at most (\S+)"), "不得大于 {0}"),
    (re.compile(r"form (\w+) has (\d+) problem\(s\)"), "表单 {0} 有 {1} 个问题"),
    (re.compile(r"screening form has (\d+) problem\(s\)"), "筛查表有 {0} 个问题"),
]
