"""The latest snapshot of a host, and its parsed inventory kept per process.

A snapshot never changes once stored, so what is derived from it (the parsed
:class:`Inventory`, the group cards) is kept by snapshot id: a page on a 1,024-function
host then costs one small query instead of decoding a megabyte of JSON on every request.
The rows are loaded without the inventory column; it is read only on a cache miss.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from passthrough.pci.model import Inventory, PciFunction
from passthrough.topology import render_svg
from webui.hosts.models import Host, Snapshot
from webui.wizard.catalog import GroupCard, group_cards, ungrouped
from webui.wizard.stitch import Compressed

KEEP = 8  # snapshots per process: a few hosts, and the one before each job


@dataclass
class Prepared:
    inventory: Inventory
    _cards: list[GroupCard] | None = field(default=None, repr=False)

    _svg: dict[str, str] = field(default_factory=dict, repr=False)
    _ungrouped: list[PciFunction] | None = field(default=None, repr=False)
    # Rendered HTML of each group, by (group id, variant): see views/devices.py.
    fragments: dict[tuple[int, bool], str] = field(default_factory=dict, repr=False)
    lists: dict[bool, Compressed] = field(default_factory=dict, repr=False)  # every group, by variant

    @property
    def cards(self) -> list[GroupCard]:
        if self._cards is None:
            self._cards = group_cards(self.inventory)
        return self._cards

    @property
    def ungrouped(self) -> list[PciFunction]:
        if self._ungrouped is None:
            self._ungrouped = ungrouped(self.inventory)
        return self._ungrouped

    def topology_svg(self, link: str) -> str:
        if link not in self._svg:
            self._svg[link] = render_svg(self.inventory, link=link)
        return self._svg[link]


# By id and time: an id alone can come back (SQLite hands out a rolled-back id again).
_cache: OrderedDict[tuple[int, datetime], Prepared] = OrderedDict()
_lock = threading.Lock()


def latest(host: Host) -> Snapshot | None:
    """The newest snapshot, without its JSON columns: the inventory comes from the cache, and the
    readiness report is read (one more query) only by the pages that show it.

    Written as SQL because every host page asks it and the ORM spends four times longer
    building the query than the database answering it; the columns left out are deferred.
    """
    query = (
        f"SELECT id, host_id, created, source, reason FROM {Snapshot._meta.db_table} "  # noqa: S608
        "WHERE host_id = %s ORDER BY created DESC, id DESC LIMIT 1"
    )
    return next(iter(Snapshot.objects.raw(query, [host.pk])), None)


def prepared(snapshot: Snapshot) -> Prepared:
    key = (snapshot.pk, snapshot.created)
    with _lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    data = Snapshot.objects.values_list("inventory", flat=True).get(pk=snapshot.pk)
    made = Prepared(Inventory.from_json(data))
    with _lock:
        _cache[key] = made
        while len(_cache) > KEEP:
            _cache.popitem(last=False)
    return made


def inventory_of(snapshot: Snapshot) -> Inventory:
    return prepared(snapshot).inventory
