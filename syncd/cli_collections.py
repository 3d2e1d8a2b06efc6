"""``syncd collections show`` and ``syncd collections remove`` (``add`` and ``list`` are in
syncd/cli.py). All SQL is in syncd/db/registry.py."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from typing import Any

import orjson

from syncd.config import Settings
from syncd.db.registry import CollectionDetails, CollectionRegistry, Removed


def add_parsers(actions: Any) -> None:
    """Register ``show`` and ``remove`` on the ``collections`` sub-command's actions."""
    show = actions.add_parser("show", help="show a collection: schema, access rule, counts",
                              description=(
        "Show a registered collection: primary key, schema version, access rule, how many "
        "documents and tombstones it holds, and its RxDB schema."
    ))
    show.add_argument("name", help="collection name")
    show.set_defaults(run=_show)
    remove = actions.add_parser("remove", help="remove a collection and all its documents",
                                description=(
        "Remove a collection and every document of it, tombstones included, for good. "
        "Refuses without --yes (and says how many documents would go). Clients replicating it "
        "then get 404 unknown_collection (pulls within SYNCD_COLLECTION_CACHE_SECONDS)."
    ))
    remove.add_argument("name", help="collection name")
    remove.add_argument("--yes", action="store_true",
                        help="really remove it, with its documents")
    remove.set_defaults(run=_remove)


def _registry(settings: Settings, args: argparse.Namespace) -> CollectionRegistry:
    from syncd import cli  # the command's own database resolution (embedded or configured)

    registry: CollectionRegistry = cli._registry(settings, args)
    return registry


def _unknown(name: str) -> int:
    print(f"syncd: there is no collection {name!r}; `syncd collections list` lists them",
          file=sys.stderr)
    return 2


def _show(settings: Settings, args: argparse.Namespace) -> int:
    registry = _registry(settings, args)

    async def fetch() -> CollectionDetails | None:
        try:
            return await registry.details(args.name)
        finally:
            await registry.close()

    found = asyncio.run(fetch())
    if found is None:
        return _unknown(args.name)
    access = (
        orjson.dumps(found.access_rule).decode() if found.access_rule is not None
        else "none (shared by every authenticated caller)"
    )
    print(f"collection      {found.name}")
    print(f"primary key     {found.primary_key}")
    print(f"schema version  {found.schema_version}")
    print(f"access rule     {access}")
    print(f"documents       {found.documents}")
    print(f"tombstones      {found.tombstones} (deleted documents; `syncd purge` removes old ones)")
    print(f"created         {found.created_at.isoformat(timespec='seconds')}")
    print(f"updated         {found.updated_at.isoformat(timespec='seconds')}")
    print("schema:")
    print(orjson.dumps(found.schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    return 0


def _remove(settings: Settings, args: argparse.Namespace) -> int:
    registry = _registry(settings, args)

    async def run() -> Removed | CollectionDetails | None:
        try:
            if args.yes:
                return await registry.remove(args.name)
            return await registry.details(args.name)
        finally:
            await registry.close()

    outcome = asyncio.run(run())
    if outcome is None:
        return _unknown(args.name)
    counts = f"{outcome.documents} document(s) and {outcome.tombstones} tombstone(s)"
    if isinstance(outcome, CollectionDetails):
        command = shlex.join(["syncd", "collections", "remove", args.name, "--yes"])
        print(f"syncd: removing collection {args.name!r} deletes its {counts} for good; "
              f"run `{command}` to do it", file=sys.stderr)
        return 2
    print(f"removed collection {args.name!r} and its {counts}")
    return 0
