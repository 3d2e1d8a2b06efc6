"""Per-collection access rules: who may read and write, and which partition a caller sees.

Pure; no I/O. A rule is stored with its collection (``syncd collections add --access``)::

    {
      "read":  {"scope": ["todos:read"]},     # every listed claim must hold one of the values
      "write": {"role": ["editor", "admin"]},
      "partition_claim": "sub",               # rows belong to the caller's `sub`; absent: shared
      "owner_field": "userId",                # pushed documents must carry that same value
      "filters": {"listId": {}, "region": {"claim": "regions"}}   # partial replication
    }

``read``/``write`` default to {} (any authenticated caller). A claim holding a list, or a
space-separated string (as OAuth's ``scope``), matches when any of its items is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from syncd.auth.identity import Identity
from syncd.exceptions import BadRequest, Forbidden
from syncd.filters import FilterDeclarationError, FilterField, parse_declaration
from syncd.keys import MAX_PARTITION_BYTES, bytes_over

PARTITION_HEADER = "X-Syncd-Partition"


class AccessRuleError(ValueError):
    """An access rule that cannot be applied; the message says which part."""


@dataclass(frozen=True, slots=True)
class AccessRule:
    read: Mapping[str, frozenset[str]] = field(default_factory=dict)
    write: Mapping[str, frozenset[str]] = field(default_factory=dict)
    partition_claim: str | None = None
    owner_field: str | None = None
    # Fields replications may filter on (docs/partial-sync.md); claim-bound ones bound access.
    filters: Mapping[str, FilterField] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> AccessRule:
        if raw is None:
            return OPEN
        if not isinstance(raw, Mapping):
            raise AccessRuleError("an access rule is a JSON object")
        unknown = set(raw) - {"read", "write", "partition_claim", "owner_field", "filters"}
        if unknown:
            raise AccessRuleError(f"unknown access rule keys: {', '.join(sorted(unknown))}")
        for key in ("partition_claim", "owner_field"):
            value = raw.get(key)
            if value is not None and (not isinstance(value, str) or not value):
                raise AccessRuleError(f"{key!r} must be a non-empty string")
        if raw.get("owner_field") and not raw.get("partition_claim"):
            raise AccessRuleError("'owner_field' needs a 'partition_claim' to compare with")
        try:
            filters = parse_declaration(raw.get("filters"))
        except FilterDeclarationError as exc:
            raise AccessRuleError(str(exc)) from None
        return cls(
            filters=filters,
            read=_requirement("read", raw.get("read")),
            write=_requirement("write", raw.get("write")),
            partition_claim=raw.get("partition_claim"),
            owner_field=raw.get("owner_field"),
        )

    def partition_for(self, identity: Identity, *, write: bool) -> str:
        """The partition this caller reads or writes; Forbidden when it may not."""
        if identity.service:
            if self.partition_claim is None:
                return ""
            if not identity.acting_partition:
                raise BadRequest(
                    f"this collection is partitioned by {self.partition_claim!r}: a service key "
                    f"must name the partition it acts for in the {PARTITION_HEADER} header",
                    code="partition_required",
                )
            too_long = bytes_over(identity.acting_partition, MAX_PARTITION_BYTES)
            if too_long is not None:
                raise BadRequest(
                    f"the {PARTITION_HEADER} header has {too_long} bytes of UTF-8; a partition "
                    f"may have at most {MAX_PARTITION_BYTES}", code="partition_too_long",
                )
            return identity.acting_partition
        requirement = self.write if write else self.read
        for claim, allowed in requirement.items():
            if not allowed & set(_claim_values(identity.claims.get(claim))):
                raise Forbidden(
                    f"{'writing' if write else 'reading'} this collection needs the claim "
                    f"{claim!r} to be one of {', '.join(sorted(allowed))}",
                    code="forbidden",
                )
        if self.partition_claim is None:
            return ""
        value = identity.claims.get(self.partition_claim)
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            raise Forbidden(
                f"this collection is partitioned by the claim {self.partition_claim!r}, "
                "which the credentials do not carry",
                code="forbidden",
            )
        partition = str(value)
        too_long = bytes_over(partition, MAX_PARTITION_BYTES)
        if too_long is not None:
            # The rows' key could not hold it (syncd/keys.py): refused, rather than a 500.
            raise Forbidden(
                f"this collection is partitioned by the claim {self.partition_claim!r}, whose "
                f"value has {too_long} bytes of UTF-8; a partition may have at most "
                f"{MAX_PARTITION_BYTES}. Partition by a shorter claim (e.g. a user id)",
                code="partition_too_long",
            )
        return partition

    def claim_names(self) -> frozenset[str]:
        """Every claim that decides what a caller may read or write."""
        names = {*self.read, *self.write}
        names.update(f.claim for f in self.filters.values() if f.claim is not None)
        if self.partition_claim is not None:
            names.add(self.partition_claim)
        return frozenset(names)

    def check_owner(self, partition: str, documents: Iterable[Mapping[str, Any]]) -> None:
        """Every pushed document must name its own partition in ``owner_field``."""
        if self.owner_field is None:
            return
        for doc in documents:
            owner = doc.get(self.owner_field)
            if owner is None or str(owner) != partition or isinstance(owner, bool):
                raise Forbidden(
                    f"documents of this collection must have {self.owner_field!r} equal to "
                    "the caller's own partition; nothing of this push was written",
                    code="forbidden_owner",
                )


OPEN = AccessRule()


def _requirement(name: str, raw: Any) -> Mapping[str, frozenset[str]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise AccessRuleError(f"{name!r} must be an object of claim name -> allowed values")
    result: dict[str, frozenset[str]] = {}
    for claim, allowed in raw.items():
        values = [allowed] if isinstance(allowed, str) else allowed
        if not isinstance(values, list) or not values or not all(
            isinstance(v, str) for v in values
        ):
            raise AccessRuleError(
                f"{name}.{claim} must be a string or a non-empty list of strings"
            )
        result[claim] = frozenset(values)
    return result


def claim_includes(value: Any, wanted: str) -> bool:
    """Whether a claim's value (a string, a space-separated string, a list) holds ``wanted``,
    read as access rules read it."""
    return wanted in _claim_values(value)


def _claim_values(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, (str, int)) and not isinstance(v, bool)]
    if isinstance(value, int) and not isinstance(value, bool):
        return [str(value)]
    return []
