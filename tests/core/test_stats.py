"""Reading a stored record's transport from its JSON text, and the tally every walking store uses
(``coatcheck._core.stats``)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from coatcheck._core.record import SessionRecord, record_to_json
from coatcheck._core.stats import SessionStats, Tally, transport_of
from tests.fuzz.test_fuzz_record import json_value, records


@given(records)
def test_the_transport_of_any_written_record_is_read_exactly(record: SessionRecord) -> None:
    """For every record record_to_json can write, whatever its data, flash, user agent or user
    id hold, the regular expression reads the record's own transport."""
    assert record.transport == transport_of(record_to_json(record))


@given(records, json_value)
def test_a_fake_tail_inside_the_data_is_not_the_record_s(
    record: SessionRecord, filler: object
) -> None:
    """Data that ends in exactly the top-level tail of a bearer record (a nested object, or the
    same text as a string) never makes a cookie record count as bearer."""
    record.transport = "cookie"
    tail = {"transport": "bearer", "user_agent": "", "user_id": None, "version": 1}
    record.data = {"a": filler, "z": tail, "zz": json.dumps(tail, separators=(",", ":"))}
    record.flash = [tail]
    expected = "cookie"
    assert expected == transport_of(record_to_json(record))


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_text_that_is_no_record_has_no_transport_or_a_consistent_one(raw: str | bytes) -> None:
    """Arbitrary text never raises, and names a transport only when it ends like a record."""
    found = transport_of(raw)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    assert found is None or f'"transport":"{found}"' in text


def test_what_is_not_a_record_counts_in_neither_transport() -> None:
    """Broken JSON, another serialisation (spaces, unsorted keys) and an unknown transport are
    not records as coatcheck writes them: no transport."""
    record = SessionRecord(
        id="i", secret_hash="h", created_at=1.0, last_seen_at=1.0, expires_at=2.0,
        absolute_expires_at=3.0, transport="bearer",
    )  # fmt: skip
    written = record_to_json(record)
    spaced = json.dumps(json.loads(written), sort_keys=True)
    unknown = written.replace('"transport":"bearer"', '"transport":"carrier-pigeon"')
    expected: list[str | None] = ["bearer", None, None, None, None]
    assert expected == [
        transport_of(written),
        transport_of("{broken"),
        transport_of(spaced),
        transport_of(unknown),
        transport_of(written[:-1]),
    ]


def test_tally_counts_by_the_stored_deadline_user_and_transport() -> None:
    """The tally counts a record live while its deadline is after ``now`` (exactly as
    purge_expired draws the line), signed in with a user, and users once each."""
    rows = []
    for user_id, expires_at, transport in [
        ("a", 20.0, "cookie"),
        ("a", 30.0, "bearer"),
        (None, 30.0, "cookie"),
        ("b", 10.0, "cookie"),
        (None, 5.0, "cookie"),
    ]:
        record = SessionRecord(
            id="i", secret_hash="h", created_at=1.0, last_seen_at=1.0, expires_at=expires_at,
            absolute_expires_at=99.0, user_id=user_id, transport=transport,  # type: ignore[arg-type]
        )  # fmt: skip
        rows.append((user_id, expires_at, record_to_json(record)))
    rows.append(("c", 40.0, "{not a record"))
    expected = SessionStats(live=4, signed_in=3, users=2, cookie=2, bearer=1, expired=2)
    stats = Tally(10.0).add_all(rows).result()
    assert (expected, 1) == (stats, stats.anonymous)
