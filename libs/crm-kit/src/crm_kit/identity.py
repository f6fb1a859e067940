"""Who is acting: the caller of a request as its verified token says, or the person an import
or a trigger acts for. Plain data, no web stack: domain code and workers use it freely."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Identity:
    """The caller of the current request, as its verified token says."""

    user_id: str
    name: str
    office_id: str
    roles: tuple[str, ...]
    permissions: frozenset[str] = field(default_factory=frozenset)
    token: str = ""

    def has(self, permission: str) -> bool:
        return permission in self.permissions

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.user_id,
            "name": self.name,
            "office_id": self.office_id,
            "roles": list(self.roles),
            "permissions": sorted(self.permissions),
        }
