"""A writer process for the several-processes SQLite test: ``python -m tests.stores.sqlite_writer
URL ID TIMES`` adds TIMES to the session's counter by read + compare-and-set and counts as many
hits, then prints ``<conflicts retried> <last hit count>``. It imports only coatcheck, so it
starts quickly."""

from __future__ import annotations

import sys

from coatcheck.stores.sql import SQLStore

NOW = 1_800_000_000.0


def main(url: str, record_id: str, times: int) -> tuple[int, int]:
    store = SQLStore.from_url(url, statement_timeout=10)
    conflicts = 0
    last_hit = 0
    try:
        for _ in range(times):
            while True:
                record = store.get(record_id)
                if record is None:
                    raise SystemExit(f"session {record_id} vanished")
                mine = record.copy()
                mine.version += 1
                mine.data = {"n": record.data["n"] + 1}
                if store.put(mine, record.version):
                    break
                conflicts += 1
            last_hit, _ = store.hit("shared", NOW, 3600)
    finally:
        store.close()
    return conflicts, last_hit


if __name__ == "__main__":
    conflicts, last_hit = main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    print(conflicts, last_hit)
