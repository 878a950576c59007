"""Pseudonymization at ingest against a real PostgreSQL, through the sink the workers use: no IP
address, user agent, login or email reaches any table (payloads, arrivals, quarantine and tokens
included); the same value gives the same pseudonym in columns and payloads; a replay of the stored
events rebuilds the same tables."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import select, text

from processors.batch import prepare
from processors.normalize import IdPolicy
from processors.privacy.pseudonymize import Pseudonymizer
from processors.replay import replay
from processors.sink import WarehouseSink
from processors.warehouse import tables
from processors.warehouse.schema import SCHEMA, TABLE_SPECS, Kind, Personal
from tests.support.people import scenarios, someone
from tests.support.warehouse import snapshot

KEY = b"a-test-key-of-at-least-32-bytes-long!"
IP, AGENT = "198.51.100.23", "Mozilla/5.0 (X11) Firefox/128.0"


async def test_nothing_in_clear_reaches_the_warehouse(engine):
    p, others = someone(3_141_592, "pseudo"), [someone(40_000_000 + i, "pseudo-o") for i in range(3)]
    messages = scenarios(p, others, datetime.now(UTC).replace(microsecond=0), 0, 9)
    # Valid JSON that jsonb cannot hold (\u0000): only the database refuses it, and the sink quarantines
    # the message itself (poison isolation), which must be pseudonymized as well.
    refused = json.loads(messages["login"])
    refused["payload"]["metadata"]["note"] = "NUL \u0000 in a string"
    refused["payload"]["metadata"]["event_time"] = "2024-02-02T10:00:00Z"
    poison = json.dumps(refused).encode()
    pseudonymizer = Pseudonymizer(KEY)
    await WarehouseSink(engine, pseudonymizer=pseudonymizer).write(
        prepare([*messages.values(), poison], IdPolicy()))

    secrets = [IP, AGENT, p.login, p.email] + [o.login for o in others]
    async with engine.connect() as conn:
        for table in tables.metadata.sorted_tables:
            spec = TABLE_SPECS[table.name]
            texts = [c.name for c in spec.all_columns() if c.kind in (Kind.TEXT, Kind.JSON)]
            for row in (await conn.execute(select(table))).mappings():
                for column in texts:
                    value = row[column]
                    stored = value if isinstance(value, str) or value is None else json.dumps(value)
                    for secret in secrets:
                        assert secret.lower() not in (stored or "").lower(), (table.name, column)
        login = await conn.execute(text(
            f"SELECT l.client_ip, e.payload #>> '{{metadata,client_ip}}', l.user_login, e.user_login "
            f"FROM {SCHEMA}.logins l JOIN {SCHEMA}.events e ON e.event_id = l.event_id WHERE e.format = 'canvas'"))
        [(column, payload, fact_login, event_login)] = login.all()
        jwt = (await conn.execute(text(f"SELECT jwt FROM {SCHEMA}.lti_notices"))).scalar()
        notice = text(f"SELECT arrival FROM {SCHEMA}.events WHERE format = 'lti_notice'")
        arrival = (await conn.execute(notice)).scalar()
        users = (await conn.execute(text(f"SELECT user_login FROM {SCHEMA}.users"))).scalars().all()
        quarantined = (await conn.execute(text(f"SELECT raw FROM {SCHEMA}.quarantine"))).scalars().all()
    assert column == payload == pseudonymizer.pseudonym(IP, Personal.IP_ADDRESS)
    assert fact_login == event_login == pseudonymizer.pseudonym(p.login, Personal.LOGIN)
    assert jwt is None and arrival["raw"] is None  # the token encodes the claims: dropped
    assert len(quarantined) == 2  # the record without an event time, and the one the database refused
    assert any(pseudonymizer.pseudonym(p.email, Personal.EMAIL) in raw for raw in quarantined)
    assert any("NUL" in raw and pseudonymizer.pseudonym(IP, Personal.IP_ADDRESS) in raw for raw in quarantined)
    assert users == [pseudonymizer.pseudonym(p.login, Personal.LOGIN)]

    # The stored payloads normalize again into the same rows (event ids pinned where payloads changed).
    before = await snapshot(engine)
    await replay(engine, IdPolicy(), rebuild=True)
    after = await snapshot(engine)
    assert sum(map(len, before.values())) > 10
    for name in before:
        assert after[name] == before[name], name
