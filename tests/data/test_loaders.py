"""Tests for recshrink.data.loaders (small hand-written files; real data only when present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recshrink.data.dataset import InteractionData
from recshrink.data.loaders import (
    kcore_filter,
    load_csv,
    load_data,
    load_pairs,
    load_recbole,
    load_s3rec,
)
from recshrink.errors import DataError, RecshrinkError

SHARED = Path(__file__).parents[3] / "shared" / "data"
BEAUTY = SHARED / "beauty" / "Beauty.txt"
ML100K = SHARED / "ml-100k" / "ml-100k.inter"


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def seqs(data: InteractionData) -> list[list[int]]:
    for s in data.sequences:
        assert isinstance(s, np.ndarray) and s.dtype == np.int64
    return [s.tolist() for s in data.sequences]


def raw_seqs(data: InteractionData) -> dict[str, list[str]]:
    return {u: [data.item_ids[i - 1] for i in s] for u, s in zip(data.user_ids, data.sequences)}


def expect_error(fn, *args, where: str, contains: str = "", **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert where in msg, msg
    assert contains in msg, msg
    assert "\n" not in msg
    return info.value


# ----------------------------------------------------------------------------- s3rec


def test_s3rec_basic(tmp_path):
    p = write(tmp_path / "toy.txt", "1 1 2 3\n\n2 4 2 5\n3 6 1 6\n")
    d = load_s3rec(p)
    assert seqs(d) == [[1, 2, 3], [4, 2, 5], [6, 1, 6]]
    assert d.user_ids == ["1", "2", "3"]
    assert d.item_ids == ["1", "2", "3", "4", "5", "6"]
    assert d.name == "toy"
    assert d.source == str(p)
    assert d.item_attrs is None
    assert d.shift is None


def test_s3rec_ids_by_first_appearance(tmp_path):
    p = write(tmp_path / "toy.txt", "7 30 10\n0 10 20 0\n5 007\n")
    d = load_s3rec(p, name="custom")
    assert d.item_ids == ["30", "10", "20", "0", "7"]
    assert seqs(d) == [[1, 2], [2, 3, 4], [5]]
    assert d.user_ids == ["7", "0", "5"]
    assert d.name == "custom"


def test_s3rec_whitespace_and_crlf(tmp_path):
    p = write(tmp_path / "toy.txt", b"1\t1  2\r\n   \r\n2 2\t3 \r\n")
    d = load_s3rec(p)
    assert seqs(d) == [[1, 2], [2, 3]]


def test_s3rec_attributes(tmp_path):
    p = write(tmp_path / "toy.txt", "1 3 1\n2 2 3\n")
    a = write(tmp_path / "attrs.json", '{"1": [5, 6], "3": [7], "99": [1]}')
    d = load_s3rec(p, attributes=a)
    assert d.item_ids == ["3", "1", "2"]
    assert d.item_attrs == [frozenset(), frozenset({7}), frozenset({5, 6}), frozenset()]
    assert d.attr_names is None


@pytest.mark.parametrize(
    "text, line, contains",
    [
        ("1 1 2\n2 3 x1\n", ":2:", "item id 'x1' is not an integer"),
        ("1 1 2\n\nu 3 4\n", ":3:", "user id 'u' is not an integer"),
        ("1 1\n2 -4\n", ":2:", "item id '-4' is negative"),
        ("-1 1\n", ":1:", "user id '-1' is negative"),
        ("1 1 2\n2 3\n3\n", ":3:", "user '3' has no items"),
        ("1 1 2\n2 3\n1 4\n", ":3:", "user '1' appears again (first on line 1)"),
        ("1 1 2.5\n", ":1:", "item id '2.5' is not an integer"),
    ],
)
def test_s3rec_bad_lines(tmp_path, text, line, contains):
    p = write(tmp_path / "bad.txt", text)
    expect_error(load_s3rec, p, where=f"bad.txt{line}", contains=contains)


def test_s3rec_bad_files(tmp_path):
    e = expect_error(load_s3rec, tmp_path / "nope.txt", where="nope.txt", contains="not found")
    assert e.line is None
    expect_error(load_s3rec, tmp_path, where=str(tmp_path), contains="directory")
    write(tmp_path / "empty.txt", "\n  \n")
    expect_error(load_s3rec, tmp_path / "empty.txt", where="empty.txt", contains="no interactions")
    write(tmp_path / "latin.txt", b"1 1 2\n2 3 \xe9\n")
    e = expect_error(load_s3rec, tmp_path / "latin.txt", where="latin.txt:2:", contains="UTF-8")
    assert e.line == 2


@pytest.mark.parametrize(
    "text, where, contains",
    [
        ('{"1": [1],\n "2": [2,]\n}', "attrs.json:2:", "invalid JSON"),
        ("[1, 2]", "attrs.json", "expected a JSON object"),
        ('{"1": "abc"}', "attrs.json", "attributes of item '1' must be a list of integers"),
        ('{"1": [1, "2"]}', "attrs.json", "attribute '2' of item '1' is not an integer"),
        ('{"1": [1.5]}', "attrs.json", "attribute 1.5 of item '1' is not an integer"),
        ('{"1": [true]}', "attrs.json", "is not an integer"),
        ('{"1": [-3]}', "attrs.json", "is negative"),
        ('{"a": [1]}', "attrs.json", "attribute key 'a' is not an integer item id"),
    ],
)
def test_s3rec_bad_attributes(tmp_path, text, where, contains):
    p = write(tmp_path / "toy.txt", "1 1 2\n")
    a = write(tmp_path / "attrs.json", text)
    expect_error(load_s3rec, p, attributes=a, where=where, contains=contains)


def test_s3rec_missing_attribute_file(tmp_path):
    p = write(tmp_path / "toy.txt", "1 1 2\n")
    expect_error(load_s3rec, p, attributes=tmp_path / "gone.json", where="gone.json")


# ----------------------------------------------------------------------------- pairs


def test_pairs_interleaved(tmp_path):
    p = write(tmp_path / "ml.txt", "1 10\n2 20\n1 30\n\n2 10\n3 30\n1 10\n")
    d = load_pairs(p)
    assert d.user_ids == ["1", "2", "3"]
    assert d.item_ids == ["10", "20", "30"]
    assert seqs(d) == [[1, 3, 1], [2, 1], [3]]
    assert d.name == "ml"


@pytest.mark.parametrize(
    "text, line, contains",
    [
        ("1 10\n1 20 3\n", ":2:", "expected 2 fields (user item), got 3"),
        ("1 10\n1\n", ":2:", "expected 2 fields (user item), got 1"),
        ("1 10\n\n\n1 b\n", ":4:", "item id 'b' is not an integer"),
        ("a 10\n", ":1:", "user id 'a' is not an integer"),
        ("1 10\n1 -2\n", ":2:", "item id '-2' is negative"),
    ],
)
def test_pairs_bad_lines(tmp_path, text, line, contains):
    p = write(tmp_path / "bad.txt", text)
    expect_error(load_pairs, p, where=f"bad.txt{line}", contains=contains)


def test_pairs_empty(tmp_path):
    p = write(tmp_path / "empty.txt", "")
    expect_error(load_pairs, p, where="empty.txt", contains="no interactions")


# ----------------------------------------------------------------------------- recbole

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "u1\tA\t5\t30\n"
    "u2\tB\t3\t10\n"
    "u1\tB\t4\t10\n"
    "u1\tC\t1\t30\n"
    "\n"
    "u2\tD\t2\t5\n"
    "u1\tD\t2\t20\n"
)


def test_recbole_timestamp_sort_is_stable(tmp_path):
    p = write(tmp_path / "toy.inter", INTER)
    d = load_recbole(p)
    assert d.name == "toy"
    assert d.user_ids == ["u1", "u2"]
    assert d.item_ids == ["A", "B", "C", "D"]
    # u1: B@10, D@20, A@30, C@30 (A before C: tie keeps file order)
    assert raw_seqs(d) == {"u1": ["B", "D", "A", "C"], "u2": ["D", "B"]}
    assert seqs(d) == [[2, 4, 1, 3], [4, 2]]
    assert d.item_attrs is None and d.attr_names is None


def test_recbole_without_timestamp_keeps_file_order(tmp_path):
    text = "item_id:token\tuser_id:token\n" "x\t1\n" "y\t2\n" "z\t1\n" "x\t1\n"
    d = load_recbole(write(tmp_path / "t.inter", text))
    assert raw_seqs(d) == {"1": ["x", "z", "x"], "2": ["y"]}


def test_recbole_sibling_item_file(tmp_path):
    p = write(tmp_path / "toy.inter", INTER)
    write(
        tmp_path / "toy.item",
        "item_id:token\tmovie_title:token_seq\tyear:token\tclass:token_seq\n"
        "A\tThe Film\t1990\tDrama Comedy\n"
        "B\tOther\t1991\tAction\n"
        "C\tThird\t1992\t\n"
        "Z\tUnused\t1993\tWestern\n",
    )
    d = load_recbole(p)
    assert d.attr_names == ["Action", "Comedy", "Drama"]
    assert d.item_attrs == [
        frozenset(),
        frozenset({1, 2}),
        frozenset({0}),
        frozenset(),
        frozenset(),  # D missing from the .item file
    ]


def test_recbole_explicit_item_file_and_fallback_column(tmp_path):
    p = write(tmp_path / "toy.inter", INTER)
    item = write(
        tmp_path / "meta.tsv",
        "item_id:token\ttitle:token_seq\ttags:token_seq\n"
        "A\tAlpha Movie\tred blue\n"
        "D\tDelta\tgreen\n",
    )
    d = load_recbole(p, item_path=item, name="n")
    assert d.name == "n"
    assert d.attr_names == ["blue", "green", "red"]
    e = frozenset()
    assert d.item_attrs == [e, frozenset({0, 2}), e, e, frozenset({1})]


def test_recbole_category_column_preferred_over_earlier_seq(tmp_path):
    p = write(tmp_path / "toy.inter", INTER)
    write(
        tmp_path / "toy.item",
        "item_id:token\tkeywords:token_seq\tgenre:token_seq\n" "A\tk1 k2\tg1\n" "B\tk3\tg2 g1\n",
    )
    d = load_recbole(p)
    assert d.attr_names == ["g1", "g2"]
    assert d.item_attrs[1] == frozenset({0}) and d.item_attrs[2] == frozenset({0, 1})


def test_recbole_item_file_without_category_column(tmp_path):
    p = write(tmp_path / "toy.inter", INTER)
    write(tmp_path / "toy.item", "item_id:token\tmovie_title:token_seq\nA\tX\n")
    d = load_recbole(p)
    assert d.item_attrs is None and d.attr_names is None


def test_recbole_bad_inputs(tmp_path):
    bad = write(tmp_path / "bad.inter", "user:token\titem_id:token\n1\t2\n")
    expect_error(load_recbole, bad, where="bad.inter:1:", contains="'user', 'item_id'")
    bad = write(tmp_path / "bad2.inter", "user_id:token\titem:token\n1\t2\n")
    expect_error(load_recbole, bad, where="bad2.inter:1:", contains="no item column 'item_id'")
    bad = write(tmp_path / "bad3.inter", "user_id:token\titem_id:token\n1\t2\n\n1\t2\t3\n")
    msg = "expected 2 tab-separated fields, got 3"
    expect_error(load_recbole, bad, where="bad3.inter:4:", contains=msg)
    text = "user_id:token\titem_id:token\ttimestamp:float\n1\t2\tsoon\n"
    bad = write(tmp_path / "bad4.inter", text)
    msg = "timestamp 'soon' is not a number"
    expect_error(load_recbole, bad, where="bad4.inter:2:", contains=msg)
    bad = write(tmp_path / "bad5.inter", "user_id:token\titem_id:token\n1\t \n")
    expect_error(load_recbole, bad, where="bad5.inter:2:", contains="empty item id")
    bad = write(tmp_path / "bad6.inter", "user_id:token\titem_id:token\n")
    expect_error(load_recbole, bad, where="bad6.inter", contains="no interactions")
    bad = write(tmp_path / "bad7.inter", "\n")
    expect_error(load_recbole, bad, where="bad7.inter", contains="no header")
    missing = tmp_path / "missing.inter"
    expect_error(load_recbole, missing, where="missing.inter", contains="not found")


def test_recbole_bad_item_file(tmp_path):
    p = write(tmp_path / "toy.inter", INTER)
    write(tmp_path / "toy.item", "item_id:token\tclass:token_seq\nA\tx\nB\n")
    msg = "expected 2 tab-separated fields, got 1"
    expect_error(load_recbole, p, where="toy.item:3:", contains=msg)
    item = write(tmp_path / "noid.item", "id:token\tclass:token_seq\nA\tx\n")
    expect_error(load_recbole, p, item_path=item, where="noid.item:1:", contains="'id', 'class'")
    gone = tmp_path / "gone.item"
    expect_error(load_recbole, p, item_path=gone, where="gone.item", contains="not found")


# ----------------------------------------------------------------------------- csv


def test_csv_time_numeric_and_categories(tmp_path):
    p = write(
        tmp_path / "log.csv",
        "uid,iid,ts,cat\n"
        "a,x,100,toys|games\n"
        "b,y,5,books\n"
        "a,y,20,books\n"
        "a,z,100,\n"
        "\n"
        "b,x,9,toys games\n",
    )
    d = load_csv(p, user_col="uid", item_col="iid", time_col="ts", category_col="cat")
    assert d.user_ids == ["a", "b"]
    assert d.item_ids == ["x", "y", "z"]
    # numeric sort: 20 < 100 (string order would put "100" first); x/z tie keeps file order
    assert raw_seqs(d) == {"a": ["y", "x", "z"], "b": ["y", "x"]}
    assert d.attr_names == ["books", "games", "toys"]
    assert d.item_attrs == [frozenset(), frozenset({1, 2}), frozenset({0}), frozenset()]
    assert d.name == "log"


def test_csv_string_time_and_defaults(tmp_path):
    p = write(
        tmp_path / "log.tsv",
        "user_id\titem_id\twhen\n"
        "1\ti1\t2020-03-01\n"
        "1\ti2\t2020-01-01\n"
        "1\ti3\t2020-02-01\n",
    )
    d = load_csv(p, time_col="when", sep="\t")
    assert raw_seqs(d) == {"1": ["i2", "i3", "i1"]}
    assert d.item_attrs is None
    d2 = load_csv(p, sep="\t")
    assert raw_seqs(d2) == {"1": ["i1", "i2", "i3"]}


def test_csv_quoted_fields(tmp_path):
    p = write(tmp_path / "q.csv", 'user_id,item_id,cat\n1,"a,b","x|y"\n2,c,x\n')
    d = load_csv(p, category_col="cat")
    assert d.item_ids == ["a,b", "c"]
    assert d.attr_names == ["x", "y"]


def test_csv_bad_inputs(tmp_path):
    p = write(tmp_path / "h.csv", "user,item\n1,2\n")
    expect_error(load_csv, p, where="h.csv:1:", contains="columns found: 'user', 'item'")
    p = write(tmp_path / "t.csv", "user_id,item_id\n1,2\n")
    expect_error(load_csv, p, time_col="ts", where="t.csv:1:", contains="no time column 'ts'")
    p = write(tmp_path / "n.csv", "user_id,item_id\n1,2\n\n1,2,3\n")
    expect_error(load_csv, p, where="n.csv:4:", contains="expected 2 fields, got 3")
    p = write(tmp_path / "e.csv", "")
    expect_error(load_csv, p, where="e.csv", contains="no header")
    p = write(tmp_path / "o.csv", "user_id,item_id\n")
    expect_error(load_csv, p, where="o.csv", contains="no interactions")
    p = write(tmp_path / "u.csv", "user_id,item_id\n1,2\n,3\n")
    expect_error(load_csv, p, where="u.csv:3:", contains="empty user id")


# ----------------------------------------------------------------------------- kcore


def make(seqs_: list[list[int]], n_items: int, **kw) -> InteractionData:
    return InteractionData(
        name="toy",
        sequences=[np.array(s, dtype=np.int64) for s in seqs_],
        user_ids=[f"u{i}" for i in range(len(seqs_))],
        item_ids=[f"i{i}" for i in range(1, n_items + 1)],
        source="toy.txt",
        **kw,
    )


def test_kcore_iterates_until_stable():
    # k=2. Round 1: item 4 (1x) and user u3 (1x) go. That leaves item 3 with only u2's
    # interaction, so item 3 goes, then u2 is left with [1] only and goes too.
    data = make(
        [[1, 2, 1], [2, 1, 2], [3, 1, 4], [3], [5, 5]],
        5,
        item_attrs=[frozenset(), *(frozenset(a) for a in ({0}, {1}, {2}, ())), frozenset({3})],
        shift=np.array([True, False, True, False, True]),
        attr_names=["a", "b", "c", "d"],
    )
    out = kcore_filter(data, 2)
    assert out.user_ids == ["u0", "u1", "u4"]
    assert out.item_ids == ["i1", "i2", "i5"]
    assert seqs(out) == [[1, 2, 1], [2, 1, 2], [3, 3]]
    assert out.item_attrs == [frozenset(), frozenset({0}), frozenset({1}), frozenset({3})]
    assert out.shift.tolist() == [True, False, True]
    assert out.attr_names == ["a", "b", "c", "d"]
    assert out.source == "toy.txt" and out.name == "toy"
    # input untouched
    assert seqs(data)[2] == [3, 1, 4] and data.num_items == 5


def test_kcore_k3_by_hand():
    # item counts 1:5, 2:4, 3:4, 4:3; user lengths 4, 3, 4, 2, 3.
    # Round 1 drops u3 -> item 4 falls to 1. Round 2 drops item 4 -> u2 = [3, 1, 2] (3, kept).
    data = make([[1, 2, 3, 1], [2, 3, 1], [3, 1, 4, 2], [4, 4], [1, 2, 3]], 4)
    out = kcore_filter(data, 3)
    assert out.user_ids == ["u0", "u1", "u2", "u4"]
    assert out.item_ids == ["i1", "i2", "i3"]
    assert seqs(out) == [[1, 2, 3, 1], [2, 3, 1], [3, 1, 2], [1, 2, 3]]


def test_kcore_empty_result_raises():
    # k=3: round 1 drops item 3 and users u3, u4; round 2 drops item 2 and u2;
    # round 3 leaves u0 = u1 = [1, 4] below 3 -> nothing left.
    data = make([[1, 2, 4], [1, 2, 4], [1, 3, 4], [2, 3], [1]], 4)
    with pytest.raises(DataError) as info:
        kcore_filter(data, 3)
    msg = str(info.value)
    assert msg.startswith("toy.txt: ")
    assert "k=3" in msg and "left no data" in msg


def test_kcore_keeps_everything_when_dense():
    data = make([[2, 1], [1, 2], [2, 1, 2]], 2)
    out = kcore_filter(data, 2)
    assert seqs(out) == seqs(data)
    assert out.item_ids == data.item_ids
    assert out.item_attrs is None and out.shift is None


def test_kcore_reindexes_by_original_id_order():
    # item 1 never used, item 2 used once -> dropped; item 4 is seen before item 3 but the new
    # ids follow the original id order: 3 -> 1, 4 -> 2.
    data = make([[4, 3, 4, 3], [4, 3, 2], [3, 4]], 4)
    out = kcore_filter(data, 2)
    assert out.item_ids == ["i3", "i4"]
    assert seqs(out) == [[2, 1, 2, 1], [2, 1], [1, 2]]


def test_kcore_k_le_1_is_identity():
    data = make([[1]], 1)
    assert kcore_filter(data, 1) is data
    assert kcore_filter(data, 0) is data


# ----------------------------------------------------------------------------- load_data


def test_load_data_dispatch(tmp_path):
    p = write(tmp_path / "toy.txt", "1 1 2\n")
    a = write(tmp_path / "a.json", '{"2": [9]}')
    d = load_data("s3rec", p, attributes=a)
    assert d.item_attrs == [frozenset(), frozenset(), frozenset({9})]
    assert seqs(load_data("pairs", write(tmp_path / "p.txt", "1 5\n1 6\n"))) == [[1, 2]]
    assert load_data("recbole", write(tmp_path / "r.inter", INTER)).num_interactions == 6
    c = write(tmp_path / "c.csv", "u,i\n1,2\n")
    assert load_data("csv", c, user_col="u", item_col="i").item_ids == ["2"]


def test_load_data_unknown_format_and_option(tmp_path):
    with pytest.raises(RecshrinkError) as info:
        load_data("parquet", tmp_path / "x")
    msg = str(info.value)
    assert "parquet" in msg
    for fmt in ("s3rec", "pairs", "recbole", "csv"):
        assert fmt in msg
    with pytest.raises(RecshrinkError, match="unknown option"):
        load_data("pairs", tmp_path / "x", attributes="a.json")


# ----------------------------------------------------------------------------- real data


@pytest.mark.skipif(not BEAUTY.is_file(), reason="shared Beauty data not present")
def test_real_beauty():
    attrs = BEAUTY.with_name("Beauty_item2attributes.json")
    d = load_s3rec(BEAUTY, attributes=attrs if attrs.is_file() else None)
    assert d.name == "Beauty"
    assert (d.num_users, d.num_items, d.num_interactions) == (22363, 12101, 198502)
    assert d.item_ids[:5] == ["1", "2", "3", "4", "5"]
    assert seqs(d)[0] == [1, 2, 3, 4, 5]
    if attrs.is_file():
        assert len(d.item_attrs) == 12102
        assert d.stats()["attributes"] == 637
    # the published data is already 5-core
    assert kcore_filter(d, 5).fingerprint() == d.fingerprint()


@pytest.mark.skipif(not ML100K.is_file(), reason="shared ml-100k data not present")
def test_real_ml100k():
    d = load_recbole(ML100K)
    assert d.name == "ml-100k"
    assert (d.num_users, d.num_items, d.num_interactions) == (943, 1682, 100000)
    assert d.item_attrs is not None and len(d.item_attrs) == 1683
    assert len(d.attr_names) == 19 and "unknown" in d.attr_names
    assert d.attr_names == sorted(d.attr_names)
    assert all(d.item_attrs[1:])  # every movie has at least one genre
    assert d.user_ids[0] == "196" and d.item_ids[0] == "242"
    # user 196's items come out in timestamp order
    rows = [line.split("\t") for line in ML100K.read_text().splitlines()[1:]]
    times = {r[1]: float(r[3]) for r in rows if r[0] == "196"}
    got = [times[d.item_ids[i - 1]] for i in d.sequences[0]]
    assert len(got) == len(times) and got == sorted(got)
