"""De-identification applied to every export before anything is written.

Exports are pseudonymous by default: the identity vault (names, record numbers, phone numbers,
dates of birth) is never read, and fields a protocol marks ``identifier: true`` are dropped.
On request, study ids are replaced by a keyed hash with a salt drawn for this export only (and
not stored, so the mapping cannot be rebuilt from the files), every date of a subject is moved by
the same random number of days (so intervals are kept), and free text is dropped. What was done
is returned by :meth:`Deidentifier.summary` for the export manifest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ductal.exchange.study_data import SubjectData
from ductal.protocols.model import Protocol

__all__ = ["DeidOptions", "Deidentifier"]


@dataclass(frozen=True)
class DeidOptions:
    """What to do beyond the default pseudonymisation."""

    hash_ids: bool = False
    shift_dates: bool = False
    max_shift_days: int = 180
    drop_free_text: bool = False
    keep_identifier_fields: bool = False
    """Only for an administrator's identified export: keep fields marked ``identifier``."""

    def __post_init__(self) -> None:
        if self.max_shift_days < 1:
            raise ValueError("max_shift_days must be at least 1")


@dataclass
class _Counts:
    subjects: int = 0
    dates_shifted: int = 0
    values_dropped: int = 0
    dropped_fields: set[str] = field(default_factory=set)


class Deidentifier:
    """Applies :class:`DeidOptions` to subjects, one at a time, and remembers what it did."""

    def __init__(
        self,
        protocol: Protocol,
        options: DeidOptions | None = None,
        *,
        rng: np.random.Generator | None = None,
        salt: bytes | None = None,
    ) -> None:
        self.protocol = protocol
        self.options = options or DeidOptions()
        self._rng = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
        self._salt = salt if salt is not None else secrets.token_bytes(32)
        self._counts = _Counts()
        self._drop: dict[str, set[str]] = {}
        self._dates: dict[str, set[str]] = {}
        self._datetimes: dict[str, set[str]] = {}
        for form in protocol.forms:
            drop = set()
            for f in form.fields:
                identifier = f.identifier and not self.options.keep_identifier_fields
                free_text = self.options.drop_free_text and f.type == "text"
                if identifier or free_text:
                    drop.add(f.key)
            self._drop[form.key] = drop
            self._dates[form.key] = {f.key for f in form.fields if f.type == "date"}
            self._datetimes[form.key] = {f.key for f in form.fields if f.type == "datetime"}

    def pseudonym(self, study_id: str) -> str:
        """Return the exported id of ``study_id`` (a salted HMAC when hashing is on)."""
        if not self.options.hash_ids:
            return study_id
        digest = hmac.new(self._salt, study_id.encode(), hashlib.sha256).hexdigest()
        return f"H{digest[:15].upper()}"

    def _offset(self) -> int:
        magnitude = int(self._rng.integers(1, self.options.max_shift_days + 1))
        return magnitude if self._rng.random() < 0.5 else -magnitude

    def apply(self, subject: SubjectData) -> SubjectData:
        """Return a de-identified copy of ``subject`` (the original is left unchanged)."""
        counts = self._counts
        counts.subjects += 1
        offset = self._offset() if self.options.shift_dates else 0

        def shift_date(value: Any) -> Any:
            if offset == 0 or not isinstance(value, str):
                return value
            counts.dates_shifted += 1
            return (dt.date.fromisoformat(value[:10]) + dt.timedelta(days=offset)).isoformat()

        def shift_datetime(value: Any) -> Any:
            if offset == 0 or not isinstance(value, str):
                return value
            counts.dates_shifted += 1
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            moved = moment + dt.timedelta(days=offset)
            return moved.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"

        forms = []
        for fd in subject.forms:
            drop = self._drop.get(fd.form, set())
            dates = self._dates.get(fd.form, set())
            datetimes = self._datetimes.get(fd.form, set())
            data: dict[str, Any] = {}
            for key, value in fd.data.items():
                if key in drop:
                    counts.values_dropped += 1
                    counts.dropped_fields.add(f"{fd.form}.{key}")
                    continue
                if key in dates:
                    value = shift_date(value)
                elif key in datetimes:
                    value = shift_datetime(value)
                data[key] = value
            forms.append(replace(fd, data=data))
        reason = subject.status_reason
        if self.options.drop_free_text and reason is not None:
            counts.values_dropped += 1
            counts.dropped_fields.add("subject.status_reason")
            reason = None
        return replace(
            subject,
            study_id=self.pseudonym(subject.study_id),
            status_reason=reason,
            screened_on=shift_date(subject.screened_on),
            enrolled_on=shift_date(subject.enrolled_on),
            forms=forms,
        )

    def summary(self) -> dict[str, Any]:
        """Return what was done, for the manifest (never the salt or the offsets)."""
        options = self.options
        identifier_fields = sorted(
            f"{form.key}.{f.key}"
            for form in self.protocol.forms
            for f in form.fields
            if f.identifier
        )
        return {
            "direct_identifiers": "not exported: the identity vault is never read",
            "identifier_fields": (
                "kept (identified export)" if options.keep_identifier_fields else "dropped"
            ),
            "identifier_fields_in_protocol": identifier_fields,
            "study_ids": (
                "replaced by HMAC-SHA256 with a random per-export salt that is not stored"
                if options.hash_ids
                else "study ids as assigned (pseudonymous)"
            ),
            "dates": (
                f"every date of a subject moved by the same random offset of 1 to "
                f"{options.max_shift_days} days, earlier or later (offsets not stored)"
                if options.shift_dates
                else "unchanged"
            ),
            "free_text": "dropped" if options.drop_free_text else "kept",
            "subjects": self._counts.subjects,
            "dates_shifted": self._counts.dates_shifted,
            "values_dropped": self._counts.values_dropped,
            "dropped_fields": sorted(self._counts.dropped_fields),
        }
