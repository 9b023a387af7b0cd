from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from facesocial.db.models import AuditEvent
from facesocial.security import audit


def test_record_writes_a_row(session, make_session) -> None:
    ev = audit.record(session, "user.login", "user:u1", "user:u1", "req-1",
                      {"ip": "10.0.0.1", "ua": "curl"}, "ok")
    with make_session() as fresh:
        row = fresh.scalar(select(AuditEvent).where(AuditEvent.id == ev.id))
        assert (row.action, row.actor, row.target, row.request_id, row.outcome) == \
            ("user.login", "user:u1", "user:u1", "req-1", "ok")
        assert row.details == {"ip": "10.0.0.1", "ua": "curl"}
        assert isinstance(row.at, datetime)


def test_denied_row_survives_rollback(session, make_session) -> None:
    audit.record(session, "apikey.auth", actor=None, target="apikey:abc", outcome=audit.DENIED)
    session.rollback()
    with make_session() as fresh:
        assert fresh.scalar(select(AuditEvent.outcome)) == "denied"


def test_commit_false_joins_the_callers_transaction(session, make_session) -> None:
    audit.record(session, "gallery.delete", commit=False)
    session.rollback()
    with make_session() as fresh:
        assert fresh.scalar(select(AuditEvent)) is None


def test_secrets_are_redacted_and_values_clipped(session) -> None:
    ev = audit.record(session, "a" * 100, actor="x" * 500, request_id="r" * 100,
                      details={"password": "hunter2", "new_api_key": "fsk_x_y",
                               "nested": {"Refresh-Token": "t", "n": 1},
                               "items": [{"secret": 1}], "when": datetime(2030, 1, 1),
                               "username": "bob"},
                      outcome="something-very-long")
    assert len(ev.action) == 64 and len(ev.actor) == 160 and len(ev.request_id) == 64
    assert len(ev.outcome) == 16
    assert ev.details == {"password": "[redacted]", "new_api_key": "[redacted]",
                          "nested": {"Refresh-Token": "[redacted]", "n": 1},
                          "items": [{"secret": "[redacted]"}], "when": "2030-01-01 00:00:00",
                          "username": "bob"}


def test_list_events(session) -> None:
    audit.record(session, "user.login", "user:a", outcome="ok")
    audit.record(session, "user.login", "user:b", outcome="denied")
    audit.record(session, "apikey.create", "user:a", target="apikey:p1")
    assert [e.action for e in audit.list_events(session)] == \
        ["apikey.create", "user.login", "user.login"]
    assert [e.actor for e in audit.list_events(session, action="user.login",
                                               outcome="denied")] == ["user:b"]
    assert len(audit.list_events(session, actor="user:a")) == 2
    assert len(audit.list_events(session, limit=1)) == 1
