"""Django ORM basics through shardgate on three unlike shards, after `manage migrate` (tests/clients.rs
runs both). `shop_item` is sharded by id, `shop_line` by item_id; Django's own tables are left
to `undeclared_tables = "reference"`. Prints "django ok <items left>".
"""
import faulthandler
# A hang in the proxy becomes a traceback and a failure, not a stuck CI run.
faulthandler.dump_traceback_later(120, exit=True)
import json
import math
import os
import statistics
import tempfile

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.contrib.postgres.aggregates import ArrayAgg, JSONBAgg, StringAgg  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.paginator import Paginator  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.db.models import Avg, Count, Exists, F, OuterRef, Q, StdDev, Subquery, Sum, Variance, Window  # noqa: E402
from django.db.models.functions import Rank, RowNumber  # noqa: E402
from shop.models import Item, Line, Shelf  # noqa: E402

user = User.objects.create_user("ann", password="pw")
assert User.objects.get(username="ann").check_password("pw")
# bulk_create: keys from the cluster's sequence, given back to each object in order.
items = Item.objects.bulk_create([Item(name=f"i{i}", qty=i) for i in range(50)])
assert len({i.pk for i in items}) == 50
for i, item in enumerate(items):
    assert Item.objects.get(pk=item.pk).name == f"i{i}"
for item in items[:10]:
    Line.objects.create(item=item, note="a")
    Line.objects.create(item=item, note="b")
assert Item.objects.count() == 50
assert Item.objects.filter(qty__gte=25).count() == 25
# iterator(): a server-side cursor over every shard.
assert sorted(i.pk for i in Item.objects.iterator(chunk_size=7)) == sorted(i.pk for i in items)
# Over a slice: the merge of the shards' cursors applies its OFFSET and LIMIT.
assert [i.pk for i in Item.objects.order_by("pk")[5:25].iterator(chunk_size=6)] == sorted(i.pk for i in items)[5:25]
# Ordered, its shards' cursors merged chunk by chunk in the query's order.
assert [(i.qty, i.pk) for i in Item.objects.order_by("-qty", "pk").iterator(chunk_size=6)] == sorted(
    ((i.qty, i.pk) for i in items), key=lambda r: (-r[0], r[1])
)
assert Item.objects.aggregate(s=Sum("qty"))["s"] == sum(range(50))
item = Item.objects.get(pk=items[3].pk)
assert item.name == "i3" and item.line_set.count() == 2
with transaction.atomic():
    Item.objects.filter(pk=items[0].pk).update(qty=100)
    Item.objects.filter(pk=items[49].pk).update(qty=0)
# distinct(field) ordered through a join: DISTINCT ON ("shop_line"."note") ... ORDER BY 1, ...
# keeps the first line of each note in the order PostgreSQL would.
firsts = Line.objects.order_by("note", "item__qty").distinct("note").values_list("note", "item__name")
assert list(firsts) == [("a", "i1"), ("b", "i1")], list(firsts)
lasts = Line.objects.order_by("note", "-item__qty").distinct("note").values_list("note", "item__name")
assert list(lasts) == [("a", "i0"), ("b", "i0")], list(lasts)
page = list(Item.objects.order_by("pk").values_list("name", flat=True)[5:10])
assert page == [f"i{i}" for i in range(5, 10)], page
assert Item.objects.filter(line__note="a").distinct().count() == 10
counted = Item.objects.annotate(n=Count("line")).filter(pk__in=[i.pk for i in items[:3]])
assert sorted(i.n for i in counted) == [2, 2, 2]
# annotate(Count) over a reference parent: every shelf, the empty one too, counted once.
shelves = [Shelf.objects.create(name=f"s{i}") for i in range(4)]
for n, it in enumerate(items[:12]):
    it.shelf = shelves[n % 3]
    it.save(update_fields=["shelf"])
per_shelf = {s.name: s.n for s in Shelf.objects.annotate(n=Count("item"))}
assert per_shelf == {"s0": 4, "s1": 4, "s2": 4, "s3": 0}, per_shelf
# Through two joins (shelf LEFT JOIN item LEFT JOIN line, each line on its item's shard): the
# lines of each shelf's items, the empty shelf at 0.
lines_per_shelf = {s.name: s.n for s in Shelf.objects.annotate(n=Count("item__line"))}
assert lines_per_shelf == {"s0": 8, "s1": 6, "s2": 6, "s3": 0}, lines_per_shelf
# Exists(OuterRef(...)) over a reference parent: the shelves some shard's items match, read
# first, then tested row by row (outside a transaction block: two reads, one snapshot).
big = Item.objects.filter(shelf=OuterRef("pk"), qty__gte=11)
assert [s.name for s in Shelf.objects.filter(Exists(big)).order_by("name")] == ["s0", "s2"]
flags = Shelf.objects.annotate(none=~Exists(big)).order_by("name").values_list("name", "none")
assert list(flags) == [("s0", False), ("s1", True), ("s2", False), ("s3", True)], list(flags)
# Subquery(...[:1]) over a reference parent: each shelf's biggest item, read as each shelf's
# first joined row over every shard (Django orders it `ORDER BY 1 DESC`).
top = Item.objects.filter(shelf=OuterRef("pk")).order_by("-qty").values("name")[:1]
tops = Shelf.objects.annotate(top=Subquery(top)).order_by("name").values_list("name", "top")
assert list(tops) == [("s0", "i0"), ("s1", "i10"), ("s2", "i11"), ("s3", None)], list(tops)
# A reference parent LEFT OUTER JOIN its sharded children, row by row: the empty shelf comes
# back once, unmatched, and a shelf matched on some shard only matched.
assert [s.name for s in Shelf.objects.filter(item__isnull=True)] == ["s3"]
pairs = list(Shelf.objects.filter(name__in=["s1", "s3"]).values_list("name", "item__name").order_by("name", "item__name"))
assert pairs == [("s1", "i1"), ("s1", "i10"), ("s1", "i4"), ("s1", "i7"), ("s3", None)], pairs
busy = Shelf.objects.annotate(n=Count("item"), q=Sum("item__qty")).filter(n__gt=0).order_by("-q")
assert [(s.name, s.n, s.q) for s in busy] == [("s0", 4, 118), ("s2", 4, 26), ("s1", 4, 22)], list(busy.values())
# Count(filter=Q(...)) and Sum(default=0): FILTER and COALESCE(SUM(...), 0) over every shard,
# with and without matching rows.
totals = Item.objects.aggregate(
    big=Count("id", filter=Q(qty__gte=25)),
    s=Sum("qty", default=0),
    none=Sum("qty", default=0, filter=Q(qty__gt=1000)),
)
assert totals == {"big": 25, "s": 1276, "none": 0}, totals
# StdDev and Variance (STDDEV_POP, VAR_SAMP): evaluated over the shards' merged sums.
qtys = [100] + list(range(1, 49)) + [0]
spread = Item.objects.aggregate(sd=StdDev("qty"), v=Variance("qty", sample=True))
assert math.isclose(spread["sd"], statistics.pstdev(qtys), rel_tol=1e-12), spread
assert math.isclose(spread["v"], statistics.variance(qtys), rel_tol=1e-12), spread
# StringAgg without ordering: every shard's names, each once.
names = Item.objects.aggregate(n=StringAgg("name", delimiter=";"))["n"]
assert sorted(names.split(";")) == sorted(f"i{i}" for i in range(50)), names
# ArrayAgg and JSONBAgg without ordering: every shard's values.
lists = Item.objects.aggregate(a=ArrayAgg("qty"), j=JSONBAgg("name"))
assert sorted(lists["a"]) == sorted(qtys), lists
assert sorted(lists["j"]) == sorted(f"i{i}" for i in range(50)), lists
# With order_by or distinct: evaluated once over every shard's gathered values.
ordered = Item.objects.aggregate(
    n=StringAgg("name", delimiter=",", order_by=("-qty", "pk")),
    a=ArrayAgg("qty", distinct=True, order_by="-qty"),
    j=JSONBAgg("name", order_by="pk"),
)
by_qty = sorted(zip(qtys, (i.pk for i in items), (f"i{i}" for i in range(50))), key=lambda t: (-t[0], t[1]))
assert ordered["n"] == ",".join(name for _, _, name in by_qty), ordered
assert ordered["a"] == sorted(set(qtys), reverse=True), ordered
assert ordered["j"] == [name for _, name in sorted((i.pk, f"i{n}") for n, i in enumerate(items))], ordered
per_shelf_names = {
    s.name: s.names for s in Shelf.objects.annotate(names=StringAgg("item__name", delimiter="/", order_by="item__qty"))
}
assert per_shelf_names == {"s0": "i3/i6/i9/i0", "s1": "i1/i4/i7/i10", "s2": "i2/i5/i8/i11", "s3": None}, per_shelf_names
filtered = {
    s.name: (s.big, s.q)
    for s in Shelf.objects.annotate(big=Count("item", filter=Q(item__qty__gte=5)), q=Sum("item__qty", default=0))
}
assert filtered == {"s0": (3, 118), "s1": (2, 22), "s2": (3, 26), "s3": (0, 0)}, filtered
# values(...).distinct().count(): distinct across shards, the NULL of items on no shelf too.
assert Item.objects.values("shelf").distinct().count() == 4
assert Item.objects.filter(qty__gte=3).values("shelf").distinct().count() == 4
assert Item.objects.filter(shelf__isnull=False).values("shelf").distinct().count() == 3
# count() of a grouped query, as a paginator over values().annotate() asks it: its groups,
# distinct across shards, the NULL shelf among them.
per_shelf_qty = Item.objects.values("shelf").annotate(q=Sum("qty")).order_by("shelf")
assert per_shelf_qty.count() == 4
assert Paginator(per_shelf_qty, 3).num_pages == 2
assert Line.objects.values("note").annotate(n=Count("id")).count() == 2
# ... and filtered on the annotation: HAVING over the merged groups, then counted.
assert Line.objects.values("note").annotate(n=Count("id")).filter(n__gt=9).count() == 2
assert Line.objects.values("note").annotate(n=Count("id")).filter(n__gt=10).count() == 0
assert Item.objects.values("shelf").annotate(q=Sum("qty")).filter(q__gt=100).count() == 2
# alias() then filter(): HAVING over an aggregate the select list leaves out (an average), and
# over one computed from aggregates; Count(distinct=True, filter=Q(...)).
shelved = Item.objects.filter(shelf__isnull=False).values("shelf")
by_avg = shelved.alias(a=Avg("qty")).filter(a__gt=6).values_list("shelf", flat=True)
assert sorted(by_avg) == sorted([shelves[0].pk, shelves[2].pk]), list(by_avg)
by_ratio = shelved.alias(r=Sum("qty") / Count("id")).filter(r__gt=6).values_list("shelf", flat=True)
assert list(by_ratio) == [shelves[0].pk], list(by_ratio)
notes = Item.objects.aggregate(
    low=Count("line__note", distinct=True, filter=Q(qty__lt=5)),
    none=Count("line__note", distinct=True, filter=Q(qty__lt=1)),
)
assert notes == {"low": 2, "none": 0}, notes
# Window(partition_by=[the shard key]): each shard numbers whole partitions; filtered on the
# window, Django reads it through a derived table.
numbered = Line.objects.annotate(
    n=Window(RowNumber(), partition_by=[F("item")], order_by=F("note").desc())
)
assert [(ln.note, ln.n) for ln in numbered.order_by("item_id", "n")] == [("b", 1), ("a", 2)] * 10
assert [ln.note for ln in numbered.filter(n=1)] == ["b"] * 10
# A window numbering every item by qty: the merge numbers the rows in the window's order.
ranked = Item.objects.annotate(r=Window(RowNumber(), order_by=[F("qty").desc(), F("pk").asc()]))
top = [(i.qty, i.r) for i in ranked.order_by("-qty", "pk")[:4]]
assert top == [(100, 1), (48, 2), (47, 3), (46, 4)], top
# Window(partition_by=[another column]), filtered on the window: the items' rows are read
# first and one server ranks them per shelf.
by_shelf = Item.objects.filter(shelf__isnull=False).annotate(
    r=Window(Rank(), partition_by=[F("shelf")], order_by=F("qty").desc())
)
tops = sorted((i.shelf_id, i.qty) for i in by_shelf.filter(r=1))
shelved_qty = [(i.shelf_id, i.qty) for i in Item.objects.filter(shelf__isnull=False)]
best = {s: max(q for t, q in shelved_qty if t == s) for s, _ in shelved_qty}
assert tops == sorted((s, q) for s, q in shelved_qty if q == best[s]) and len(tops) >= 3, tops
# A window over groups (Window(Rank()) over values().annotate(Sum)): the shelves ranked by
# their items' total qty, which one server computes over the items' rows read first.
ranked_shelves = (
    Item.objects.filter(shelf__isnull=False)
    .values("shelf")
    .annotate(q=Sum("qty"), r=Window(Rank(), order_by=Sum("qty").desc()))
    .order_by("r", "shelf")
)
totals = {}
for t, q in shelved_qty:
    totals[t] = totals.get(t, 0) + q
want = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
got = [(g["shelf"], g["q"], g["r"]) for g in ranked_shelves]
assert [(s, q) for s, q, _ in got] == want and got[0][2] == 1, (got, want)
# A share of the whole (Window(Sum(...)) without partition or order): every shard's sum added.
shares = Item.objects.annotate(total=Window(Sum("qty"))).order_by("pk")[:3]
assert [i.total for i in shares] == [1276] * 3, [i.total for i in shares]
# difference() and intersection() over one model select its key in every branch.
low = Item.objects.filter(qty__lt=20)
assert sorted(i.name for i in low.difference(Item.objects.filter(qty__lt=10))) == sorted(
    f"i{i}" for i in range(10, 20)
)
assert sorted(i.name for i in low.intersection(Item.objects.filter(qty__gte=15))) == sorted(
    f"i{i}" for i in range(15, 20)
)
# union() of names (no key): every branch parenthesized, one of each name kept across shards.
names = Item.objects.filter(qty__lt=3).values_list("name", flat=True).union(
    Item.objects.filter(Q(qty__lt=2) | Q(qty__gt=47)).values_list("name", flat=True)
).order_by("name")
assert list(names) == ["i0", "i1", "i2", "i48", "i49"], list(names)
# Over several columns and a join: rows distinct across shards, NULLs among them.
assert Item.objects.values("shelf", "line__note").distinct().count() == 9
assert Item.objects.filter(qty__lt=5).values("shelf", "line__note").distinct().count() == 7
# Subquery(...) counting each item's lines: correlated by the shard key, run on every shard.
lines = Line.objects.filter(item=OuterRef("pk")).values("item").annotate(c=Count("*")).values("c")
with_lines = Item.objects.annotate(n=Subquery(lines)).filter(n__gte=1).order_by("-n", "pk")
assert [i.n for i in with_lines] == [2] * 10, [(i.pk, i.n) for i in with_lines]
# Subqueries that read every shard and name nothing of the outer query: the proxy answers
# them first. The second-fullest item's qty as a bound, and the three fullest items' keys.
second = Item.objects.order_by("-qty", "pk").values("qty")[1:2]
assert sorted(Item.objects.filter(qty__gte=Subquery(second)).values_list("name", flat=True)) == ["i0", "i48"]
fullest3 = Item.objects.order_by("-qty", "pk").values("pk")[:3]
assert sorted(Item.objects.filter(pk__in=fullest3).values_list("name", flat=True)) == ["i0", "i47", "i48"]
assert Item.objects.exclude(pk__in=fullest3).count() == 47
# update() and delete() filtered by that subquery (a LIMIT no shard answers alone): the proxy
# answers it first, then writes where the rows are.
assert Item.objects.filter(pk__in=fullest3).update(qty=F("qty") + 1000) == 3
assert sorted(Item.objects.filter(qty__gte=1000).values_list("name", flat=True)) == ["i0", "i47", "i48"]
assert Item.objects.filter(qty__gte=1000).update(qty=F("qty") - 1000) == 3
# delete() runs in a transaction block even in autocommit mode, READ COMMITTED by default,
# whose statements each take a snapshot of their own: there the same subquery is refused,
# with a hint, and nothing is deleted.
Line.objects.bulk_create([Line(item=items[47], note="tmp"), Line(item=items[48], note="tmp")])
try:
    Line.objects.filter(item__in=fullest3, note="tmp").delete()
    raise AssertionError("a READ COMMITTED block deleted by a subquery over every shard")
except django.db.NotSupportedError as e:
    assert "REPEATABLE READ" in str(e), e
assert Line.objects.filter(note="tmp").count() == 2
assert Line.objects.filter(note="tmp").delete() == (2, {"shop.Line": 2})
# aggregate() over a sliced queryset reads a derived table of the top rows: answered first.
assert Item.objects.order_by("-qty")[:5].aggregate(s=Sum("qty"))["s"] == 286
# distinct("shelf") with order_by("shelf", "-qty"): DISTINCT ON, the fullest item per shelf.
fullest = Item.objects.filter(shelf__isnull=False).order_by("shelf", "-qty").distinct("shelf")
assert [i.name for i in fullest] == ["i0", "i10", "i11"], [i.name for i in fullest]
# update(x=Subquery(...)): each row set from its own lines, on its own shard.
some = [i.pk for i in items[5:8]]
assert Item.objects.filter(pk__in=some).update(qty=Subquery(lines) + 100) == 3
assert sorted(Item.objects.filter(pk__in=some).values_list("qty", flat=True)) == [102] * 3
# save() writes every column, the shard key item_id among them, with the value it has: it runs.
# Moving a line to another item would move it to another shard: refused, nothing changes.
line = Line.objects.filter(item=items[3]).get(note="a")
line.note = "saved"
line.save()
assert Line.objects.get(pk=line.pk).note == "saved"
line.item = items[4]
try:
    with transaction.atomic():
        line.save()
    raise AssertionError("a line moved to another item's shard")
except django.db.NotSupportedError as e:
    assert "may not change the shard key" in str(e), e
assert Line.objects.get(pk=line.pk).item_id == items[3].pk
# An upsert by id alone would look for the id on the new row's shard only: refused.
try:
    Line.objects.bulk_create(
        [Line(pk=line.pk, item=items[5], note="upserted")],
        update_conflicts=True,
        unique_fields=["id"],
        update_fields=["note"],
    )
    raise AssertionError("an upsert by id alone was run")
except django.db.NotSupportedError as e:
    assert "would look for conflicts on one shard only" in str(e), e
assert Line.objects.filter(pk=line.pk).count() == 1
# ignore_conflicts with ids of their own likewise; new objects (ids from the cluster's
# sequence) cannot meet another shard's row, and are inserted.
try:
    Line.objects.bulk_create([Line(pk=line.pk, item=items[5], note="dup")], ignore_conflicts=True)
    raise AssertionError("an insert ignoring conflicts by id alone was run")
except django.db.NotSupportedError as e:
    assert "would look for conflicts on one shard only" in str(e), e
Line.objects.bulk_create([Line(item=items[5], note="fresh")], ignore_conflicts=True)
assert Line.objects.filter(note="fresh").count() == 1
assert Line.objects.filter(pk=line.pk).count() == 1
# An object created with an id another line has, under an item on another shard: the
# IntegrityError one server gives, not a second row with that id.
def shard_of(item):
    with connection.cursor() as cur:
        cur.execute(f"SHOW shardgate.route shop_line {item.pk}")
        return cur.fetchone()[3]


elsewhere = next(i for i in items[4:] if shard_of(i) != shard_of(items[3]))
try:
    with transaction.atomic():
        Line.objects.create(pk=line.pk, item=elsewhere, note="same id")
    raise AssertionError("a second line with one id was written")
except django.db.IntegrityError as e:
    assert "already exists" in str(e), e
assert Line.objects.filter(pk=line.pk).count() == 1
# An id of its own ahead of the sequence is written, and the sequence's later ids skip it.
ahead = Line.objects.order_by("-pk").first().pk + 3
Line.objects.create(pk=ahead, item=elsewhere, note="own id")
later = Line.objects.bulk_create([Line(item=items[6], note="later") for _ in range(10)])
assert ahead not in [x.pk for x in later], [x.pk for x in later]
assert Line.objects.filter(pk=ahead).count() == 1
# That line's id changed by update() (UPDATE ... SET id = ... WHERE id = ..., over every shard)
# to the id of the line under an item on another shard: the same IntegrityError.
try:
    with transaction.atomic():
        Line.objects.filter(pk=ahead).update(id=line.pk)
    raise AssertionError("update() wrote a second line with one id")
except django.db.IntegrityError as e:
    assert "already exists" in str(e), e
assert Line.objects.filter(pk=line.pk).count() == 1
assert Line.objects.filter(pk=ahead).count() == 1
# loaddata: rows with their own ids, then Django's sequence reset (`SELECT setval(...,
# coalesce(max("id"), 1), max("id") IS NOT null) FROM ...`), for a sharded table (its max over
# every shard) and a reference one (every copy's sequence).
fixture = [
    {"model": "shop.shelf", "pk": 900, "fields": {"name": "loaded"}},
    {"model": "shop.item", "pk": 5003, "fields": {"name": "loaded", "qty": -7, "shelf": 900}},
    {"model": "shop.item", "pk": 5000, "fields": {"name": "loaded", "qty": -7, "shelf": None}},
]
with tempfile.TemporaryDirectory() as where:
    path = os.path.join(where, "loaded.json")
    with open(path, "w") as f:
        json.dump(fixture, f)
    call_command("loaddata", path, verbosity=0)
fresh = Item.objects.create(name="after load", qty=-7)
assert fresh.pk > 5003, fresh.pk
assert Shelf.objects.create(name="after load").pk == 901
# Exists() correlated off the shard key: line.note against item.name (lines are placed by
# item_id), read as the notes first.
target = Item.objects.order_by("pk").first()
named = Line.objects.create(item=target, note=target.name)
notes = set(Line.objects.values_list("note", flat=True))
every = list(Item.objects.values_list("name", flat=True))
matching = Item.objects.filter(Exists(Line.objects.filter(note=OuterRef("name"))))
assert sorted(matching.values_list("name", flat=True)) == sorted(n for n in every if n in notes)
assert matching.count() >= 1
missing = Item.objects.filter(~Exists(Line.objects.filter(note=OuterRef("name"))))
assert missing.count() == len([n for n in every if n not in notes])
named.delete()
Item.objects.filter(qty=-7).delete()
Item.objects.filter(qty__lt=5).delete()
print("django ok", Item.objects.count())
