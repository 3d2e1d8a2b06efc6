"""Partial replication's rules: declared filter fields, the client's selector, the effective
filter, and what a filtered checkpoint holds. Pure; no I/O (docs/partial-sync.md).

A filter is kept as a ``Filter``: a sorted tuple of (field, sorted tuple of JSON texts). It is
hashable (a hub feed key), compares by value (a changed filter is noticed), and its JSON texts go
to PostgreSQL as ``jsonb[]`` unchanged.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from syncd.auth.identity import Identity
from syncd.exceptions import BadRequest, Forbidden

Filter = tuple[tuple[str, tuple[str, ...]], ...]

MAX_FIELDS = 8
MAX_VALUES = 100
MAX_VALUE_BYTES = 512
# The effective filter travels in every checkpoint (twice during a filter change), which
# rxdb-server's client sends back in a URL: kept well below what a request line may hold.
MAX_FILTER_BYTES = 2048
# Field names go into SQL text (expression indexes, the trigger's arguments): identifiers only.
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
FILTERABLE_TYPES = frozenset({"string", "number", "integer", "boolean"})
OPERATORS = ("$eq", "$in")


class FilterDeclarationError(ValueError):
    """A ``filters`` declaration that cannot be served; the message says which part."""


@dataclass(frozen=True, slots=True)
class FilterField:
    name: str
    claim: str | None = None  # the claim whose values bound this field (an access boundary)


def parse_declaration(raw: Any) -> Mapping[str, FilterField]:
    """The access rule's ``"filters"``: ``{"listId": {}, "region": {"claim": "regions"}}``."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise FilterDeclarationError(
            "'filters' must be an object of field name -> options, e.g. "
            '{"listId": {}, "region": {"claim": "regions"}}'
        )
    if len(raw) > MAX_FIELDS:
        raise FilterDeclarationError(f"'filters' may declare at most {MAX_FIELDS} fields")
    fields: dict[str, FilterField] = {}
    for name, options in raw.items():
        if not FIELD_NAME.fullmatch(name):
            raise FilterDeclarationError(
                f"filter field {name!r}: a top-level field name of letters, digits and _"
            )
        if not isinstance(options, Mapping) or set(options) - {"claim"}:
            raise FilterDeclarationError(
                f"filters.{name} must be {{}} or {{\"claim\": \"<claim name>\"}}"
            )
        claim = options.get("claim")
        if claim is not None and (not isinstance(claim, str) or not claim):
            raise FilterDeclarationError(f"filters.{name}.claim must be a non-empty string")
        fields[name] = FilterField(name, claim)
    return fields


def check_declaration(fields: Mapping[str, FilterField], schema: Mapping[str, Any]) -> None:
    """Every declared field is a scalar top-level property; claim-bound ones are strings."""
    properties = schema.get("properties") or {}
    for name, declared in fields.items():
        prop = properties.get(name)
        if not isinstance(prop, Mapping):
            raise FilterDeclarationError(
                f"filter field {name!r} is not a top-level property of the schema"
            )
        types = prop.get("type")
        kinds = ({types} if isinstance(types, str) else set(types or ())) - {"null"}
        if not kinds or not kinds <= FILTERABLE_TYPES:
            raise FilterDeclarationError(
                f"filter field {name!r} must have type string, number, integer or boolean "
                f"(an index serves equality on scalars); it has {types!r}"
            )
        if declared.claim is not None and kinds != {"string"}:
            raise FilterDeclarationError(
                f"filter field {name!r} is bound to the claim {declared.claim!r}, so it must be "
                "of type string (claims hold strings)"
            )


def parse_selector(raw: str | None, declared: Mapping[str, FilterField]) -> Filter | None:
    """The client's ``filter`` (URL-decoded JSON text): None when absent or ``{}``."""
    if raw is None or raw == "":
        return None
    try:
        selector = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _invalid(f"filter {_short(raw)} is not JSON", declared) from None
    return selector_filter(selector, declared)


def selector_filter(selector: Any, declared: Mapping[str, FilterField]) -> Filter | None:
    if selector is None:
        return None
    if not isinstance(selector, dict):
        raise _invalid("a filter is a JSON object of field -> value", declared)
    result: list[tuple[str, tuple[str, ...]]] = []
    total = 0
    for name in sorted(selector):
        if name not in declared:
            raise _invalid(f"{name!r} is not a declared filter field", declared)
        values = _values(name, selector[name], declared)
        total += len(values)
        result.append((name, values))
    if total > MAX_VALUES:
        raise _invalid(f"the filter has {total} values; at most {MAX_VALUES}", declared)
    return tuple(result) or None


def _values(name: str, condition: Any, declared: Mapping[str, FilterField]) -> tuple[str, ...]:
    if isinstance(condition, dict):
        if len(condition) != 1 or next(iter(condition)) not in OPERATORS:
            raise _invalid(f"{name}: only $eq and $in are supported, got {_short(condition)}",
                           declared)
        operator, operand = next(iter(condition.items()))
        if operator == "$eq":
            items = [operand]
        elif not isinstance(operand, list) or not operand:
            raise _invalid(f"{name}.$in needs a non-empty array of values", declared)
        else:
            items = operand
    else:
        items = [condition]
    texts = set()
    for item in items:
        if isinstance(item, float) and item.is_integer():
            item = int(item)  # 1.0 and 1 are one value in JSON (and in jsonb)
        if isinstance(item, (str, int, float)):  # bool is an int
            text = orjson.dumps(item).decode()
        else:
            raise _invalid(f"{name}: values are strings, numbers or booleans, got "
                           f"{_short(item)}", declared)
        if len(text) > MAX_VALUE_BYTES:
            raise _invalid(f"{name}: a value may have at most {MAX_VALUE_BYTES} bytes", declared)
        texts.add(text)
    return tuple(sorted(texts))


def effective(
    requested: Filter | None, declared: Mapping[str, FilterField], identity: Identity,
    *, fresh: bool = False,
) -> Filter | None:
    """What a replication is served: the client's filter AND, for each claim-bound field, the
    caller's claim values. A value the claims do not allow is refused (403) when the replication
    starts from nothing (``fresh``); for one that has a checkpoint it is dropped: that is a
    revocation, and what the value selected leaves the device."""
    bound = {} if identity.service else {
        name: _claim_texts(identity.claims.get(field.claim))
        for name, field in declared.items() if field.claim is not None
    }
    result = dict(requested or ())
    for name, allowed in bound.items():
        asked = result.get(name)
        if asked is None:
            result[name] = tuple(sorted(allowed))
            continue
        refused = [value for value in asked if value not in allowed]
        if refused and fresh:
            raise Forbidden(
                f"the filter asks for {name} = {', '.join(refused)}, which the caller's claim "
                f"{declared[name].claim!r} does not allow",
                code="forbidden_filter_value",
            )
        result[name] = tuple(value for value in asked if value in allowed)
    size = sum(len(name) + sum(len(v) + 1 for v in values) for name, values in result.items())
    if size > MAX_FILTER_BYTES:
        raise BadRequest(
            f"the filter, with the values the caller's claims add, has {size} bytes of field "
            f"names and values; a replication may select at most {MAX_FILTER_BYTES}. Filter on "
            "fewer values (of a claim-bound field: a few of the claim's values)",
            code="filter_too_large",
        )
    return tuple(sorted(result.items())) or None


def _claim_texts(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        items: list[Any] = value.split()
    elif isinstance(value, list):
        items = [v for v in value if isinstance(v, str)]
    else:
        items = []
    return frozenset(orjson.dumps(item).decode() for item in items)


def matches(flt: Filter | None, doc: Mapping[str, Any]) -> bool:
    """Whether a document (decoded) is selected by the filter, as the SQL decides it."""
    if flt is None:
        return True
    for name, values in flt:
        value = doc.get(name, _MISSING)
        if value is _MISSING or not _scalar(value) or _text(value) not in values:
            return False
    return True


def within(narrow: Filter | None, wide: Filter | None) -> bool:
    """Whether everything ``narrow`` selects is selected by ``wide`` (a narrowing)."""
    if wide is None:
        return True
    if narrow is None:
        return False
    narrow_values = dict(narrow)
    for name, values in wide:
        mine = narrow_values.get(name)
        if mine is None or not set(mine) <= set(values):
            return False
    return True


def forbidden_values(
    declared: Mapping[str, FilterField], identity: Identity, docs: Sequence[Mapping[str, Any]]
) -> str | None:
    """The first claim-bound value among pushed documents that the caller may not write."""
    if identity.service:
        return None
    for name, field in declared.items():
        if field.claim is None:
            continue
        allowed = _claim_texts(identity.claims.get(field.claim))
        for doc in docs:
            value = doc.get(name)
            if value is None:  # a document nobody but service keys could ever see again
                return (f"{name} is missing; documents of this collection must carry {name} "
                        f"with a value of the caller's claim {field.claim!r}; nothing of this "
                        "push was written")
            if not _scalar(value) or _text(value) not in allowed:
                return (f"{name} = {_text(value) if _scalar(value) else _short(value)} is outside "
                        f"the caller's claim {field.claim!r}; nothing of this push was written")
    return None


_MISSING = object()


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float))  # bool is an int


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return orjson.dumps(value).decode()


# What a filtered checkpoint carries after its position ("<epoch>.<seq>~<state>").
@dataclass(frozen=True, slots=True)
class FilterState:
    filter: Filter | None  # the effective filter the position was served with
    floor: int = 0  # move-outs below this xid cannot concern the replication
    # While a filter change removes what ``filter`` held: the filter it changes to, the floor for
    # the pull that follows, and the last id removed so far.
    target: Filter | None = None
    removal: tuple[int, str] | None = None


def encode_state(state: FilterState) -> str:
    body: dict[str, Any] = {"f": _filter_json(state.filter)}
    if state.floor:
        body["m"] = state.floor
    if state.removal is not None:
        body["n"] = _filter_json(state.target)
        body["r"] = list(state.removal)
    return base64.urlsafe_b64encode(orjson.dumps(body)).rstrip(b"=").decode()


def decode_state(token: str) -> FilterState:
    try:
        body = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(body, dict) or "f" not in body:
            raise ValueError
        floor = body.get("m", 0)
        removal = body.get("r")
        if not isinstance(floor, int) or floor < 0:
            raise ValueError
        if removal is not None:
            if (not isinstance(removal, list) or len(removal) != 2
                    or not isinstance(removal[0], int) or not isinstance(removal[1], str)):
                raise ValueError
            removal = (removal[0], removal[1])
        return FilterState(
            _filter_of(body.get("f")), floor,
            _filter_of(body.get("n")) if removal is not None else None, removal,
        )
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise BadRequest(
            "the checkpoint's filter state is damaged; send the checkpoint of the previous pull "
            "unchanged, or start the replication again without a checkpoint",
            code="invalid_checkpoint",
        ) from None


def _filter_json(flt: Filter | None) -> dict[str, list[Any]] | None:
    if flt is None:
        return None
    return {name: [orjson.loads(v) for v in values] for name, values in flt}


def _filter_of(raw: Any) -> Filter | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError
    result = []
    for name in sorted(raw):
        values = raw[name]
        if not isinstance(values, list) or not all(_scalar(v) for v in values):
            raise ValueError
        result.append((name, tuple(sorted({_text(v) for v in values}))))
    return tuple(result) or None


def _invalid(problem: str, declared: Mapping[str, FilterField]) -> BadRequest:
    fields = ", ".join(sorted(declared)) or "none (the collection's access rule declares none)"
    return BadRequest(
        f"invalid filter: {problem}. Filterable fields: {fields}; a filter is a JSON object "
        'such as {"field": "value"} or {"field": {"$in": ["a", "b"]}} ($eq and $in only, '
        "AND across fields), sent URL-encoded as ?filter=",
        code="invalid_filter",
    )


def _short(value: Any) -> str:
    try:
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return repr(text if len(text) <= 60 else text[:57] + "...")
