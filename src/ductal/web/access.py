"""Who may do what: permissions by role, and the signed-in principal's roles by site.

A permission is granted by a role held *at the site* of the thing acted on; a user sees and
changes only subjects of the sites they belong to. Every route declares its permission through
the dependency it uses (see :mod:`ductal.web.deps`), and the route × role test reads it from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ductal.models import ROLES

ALL_ROLES = frozenset(ROLES)
DATA_ENTRY = frozenset({"coordinator", "investigator"})

PERMISSIONS: dict[str, frozenset[str]] = {
    "authenticated": ALL_ROLES,  # one's own account
    "view": ALL_ROLES,  # study data at one's sites (pseudonymised)
    "screen": DATA_ENTRY,
    "enrol": DATA_ENTRY,
    "enter_data": DATA_ENTRY,
    "randomise": DATA_ENTRY,
    "open_query": frozenset({"monitor", "investigator"}),
    "answer_query": DATA_ENTRY,
    "close_query": frozenset({"monitor"}),
    "verify": frozenset({"monitor"}),
    "sign": frozenset({"investigator"}),
    "lock": frozenset({"monitor", "admin"}),
    "unlock": frozenset({"admin"}),
    "audit": frozenset({"admin", "investigator", "coordinator", "monitor"}),
    "reports": frozenset({"admin", "investigator", "monitor", "statistician", "read_only"}),
    "identity": frozenset({"admin"}),
    "override_check": frozenset({"investigator"}),  # lift a blocking pre-session check
    "export": frozenset({"admin", "statistician"}),  # pseudonymous exports, import dry runs
    "import": frozenset({"admin"}),  # imports register protocols and create subjects
    "admin": frozenset({"admin"}),
}
PUBLIC = "public"


def roles_for(permission: str) -> frozenset[str]:
    """Return the roles that hold ``permission`` (every role for ``authenticated``)."""
    return PERMISSIONS[permission]


@dataclass
class Principal:
    """The signed-in user of one request and their roles by site id."""

    user_id: int
    username: str
    full_name: str
    language: str
    roles: dict[int, set[str]] = field(default_factory=dict)
    via: str = "session"  # or "token"
    csrf_token: str = ""
    session_id: str | None = None

    def can(self, permission: str, site_id: int | None = None) -> bool:
        """Return True when a role of the user grants ``permission`` (at ``site_id`` if given)."""
        allowed = PERMISSIONS[permission]
        if site_id is None:
            return any(r & allowed for r in self.roles.values())
        return bool(self.roles.get(site_id, set()) & allowed)

    def sites(self, permission: str = "view") -> list[int]:
        """Return the ids of the sites where the user holds ``permission``, in id order."""
        allowed = PERMISSIONS[permission]
        return sorted(s for s, r in self.roles.items() if r & allowed)

    def belongs_to(self, site_id: int) -> bool:
        return site_id in self.roles

    @property
    def all_roles(self) -> set[str]:
        return set().union(*self.roles.values()) if self.roles else set()

    @property
    def is_statistician_only(self) -> bool:
        """True when the user only ever sees data as a statistician (pseudonymised)."""
        return self.all_roles == {"statistician"}
