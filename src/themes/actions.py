"""The trust's actions on linked recommendations, with the history of every change.

An action belongs to a recommendation (and, optionally, to the theme it was linked from):
an owner, what will be done, a status (open / in progress / done / not applicable), a due
date and the evidence of completion. Every change is kept in `link_action_history` with
who made it and when; nothing is ever deleted.
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from themes.errors import NotFoundError, ThemesError
from themes.recommendations import ensure_tables as ensure_recommendation_tables
from themes.recommendations import recommendations_table
from themes.store import Store, metadata, themes_table, utcnow

log = logging.getLogger(__name__)

STATUSES: tuple[str, ...] = ("open", "in progress", "done", "not applicable")
OPEN_STATUSES: tuple[str, ...] = ("open", "in progress")
EDITABLE: tuple[str, ...] = ("owner", "action", "status", "due_date", "evidence", "theme_id")

link_actions = sa.Table(
    "link_actions",
    metadata,
    sa.Column("action_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rec_id", sa.String, nullable=False, index=True),
    sa.Column("theme_id", sa.Integer, index=True),
    sa.Column("owner", sa.String, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("status", sa.String, nullable=False),
    sa.Column("due_date", sa.Date),
    sa.Column("evidence", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("created_by", sa.String, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("updated_by", sa.String, nullable=False),
)

link_action_history = sa.Table(
    "link_action_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("action_id", sa.Integer, nullable=False, index=True),
    sa.Column("changed_at", sa.DateTime, nullable=False),
    sa.Column("changed_by", sa.String, nullable=False),
    # JSON {field: [old, new]}; a new action has old = null for every field
    sa.Column("changes", sa.Text, nullable=False),
)

TABLES = [link_actions, link_action_history]


class ActionError(ThemesError):
    """An action cannot be recorded as asked (bad status, date, or missing evidence)."""


def ensure_tables(store: Store) -> None:
    """Create the action tables (and the recommendation tables they refer to)."""
    ensure_recommendation_tables(store)
    metadata.create_all(store.engine, tables=TABLES)


def parse_due(value: str | date | None) -> date | None:
    """A due date from ISO `yyyy-mm-dd` (or UK `dd/mm/yyyy`); None or "" for no date."""
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value
    for sep, order in (("-", (0, 1, 2)), ("/", (2, 1, 0))):
        parts = value.strip().split(sep)
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            y, m, d = (int(parts[i]) for i in order)
            if len(parts[order[0]]) != 4:
                raise ActionError(
                    f"due date '{value}': write the year in full (e.g. 31/03/2026 or 2026-03-31)."
                )
            try:
                return date(y, m, d)
            except ValueError:
                break
    raise ActionError(f"due date '{value}' is not a date; use yyyy-mm-dd (e.g. 2026-03-31).")


def _check_theme(conn: sa.Connection, theme_id: int | None) -> None:
    """A theme an action names must exist in some theme model (current or earlier)."""
    if theme_id is None:
        return
    found = conn.execute(
        sa.select(themes_table.c.theme_id).where(themes_table.c.theme_id == theme_id).limit(1)
    ).first()
    if found is None:
        raise NotFoundError(f"No theme {theme_id}; `themes themes` lists them.")


def _check(values: dict[str, Any]) -> None:
    status = values.get("status")
    if status is not None and status not in STATUSES:
        raise ActionError(f"status '{status}' is not one of: {', '.join(STATUSES)}.")
    if values.get("status") == "done" and not str(values.get("evidence") or "").strip():
        raise ActionError(
            "an action can only be marked done with evidence of completion (--evidence)."
        )
    for name in ("owner", "action"):
        if name in values and not str(values[name] or "").strip():
            raise ActionError(f"'{name}' must not be empty.")


def add_action(
    store: Store,
    *,
    rec_id: str,
    owner: str,
    action: str,
    by: str,
    status: str = "open",
    due_date: str | date | None = None,
    evidence: str = "",
    theme_id: int | None = None,
) -> dict[str, Any]:
    """Record a new action on a recommendation; returns it with its id."""
    ensure_tables(store)
    values = {
        "rec_id": rec_id,
        "theme_id": theme_id,
        "owner": owner.strip(),
        "action": action.strip(),
        "status": status,
        "due_date": parse_due(due_date),
        "evidence": evidence.strip(),
    }
    _check(values)
    now = utcnow()
    with store.begin() as conn:
        known = conn.execute(
            sa.select(recommendations_table.c.rec_id).where(
                recommendations_table.c.rec_id == rec_id
            )
        ).first()
        if known is None:
            raise NotFoundError(
                f"No recommendation '{rec_id}'; `themes recommendations list` shows the ids."
            )
        _check_theme(conn, theme_id)
        action_id = conn.execute(
            link_actions.insert().values(
                **values, created_at=now, created_by=by, updated_at=now, updated_by=by
            )
        ).inserted_primary_key[0]
        conn.execute(
            link_action_history.insert().values(
                action_id=action_id,
                changed_at=now,
                changed_by=by,
                changes=json.dumps({k: [None, _plain(v)] for k, v in values.items()}),
            )
        )
    return get_action(store, int(action_id))


def update_action(store: Store, action_id: int, *, by: str, **changes: Any) -> dict[str, Any]:
    """Change an action's fields (owner, action, status, due_date, evidence, theme_id).

    Only fields that really change are written; the history records old and new values.
    """
    ensure_tables(store)
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise ActionError(f"cannot change {', '.join(unknown)}; editable: {', '.join(EDITABLE)}.")
    current = get_action(store, action_id)
    if "due_date" in changes:
        changes["due_date"] = parse_due(changes["due_date"])
    for name in ("owner", "action", "evidence"):
        if name in changes and changes[name] is not None:
            changes[name] = str(changes[name]).strip()
    merged = {**current, **changes}
    merged["due_date"] = parse_due(merged["due_date"])
    _check({k: merged[k] for k in ("status", "evidence", "owner", "action")})
    diff = {k: [current[k], _plain(v)] for k, v in changes.items() if _plain(v) != current[k]}
    if not diff:
        return current
    now = utcnow()
    with store.begin() as conn:
        if "theme_id" in diff:
            _check_theme(conn, changes["theme_id"])
        conn.execute(
            link_actions.update()
            .where(link_actions.c.action_id == action_id)
            .values(**{k: changes[k] for k in diff}, updated_at=now, updated_by=by)
        )
        conn.execute(
            link_action_history.insert().values(
                action_id=action_id, changed_at=now, changed_by=by, changes=json.dumps(diff)
            )
        )
    return get_action(store, action_id)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _row(r: Any, today: date) -> dict[str, Any]:
    due = r["due_date"]
    return {
        "action_id": r["action_id"],
        "rec_id": r["rec_id"],
        "theme_id": r["theme_id"],
        "owner": r["owner"],
        "action": r["action"],
        "status": r["status"],
        "due_date": due.isoformat() if due else None,
        "evidence": r["evidence"],
        "overdue": bool(due and due < today and r["status"] in OPEN_STATUSES),
        "created_at": r["created_at"].isoformat(timespec="seconds"),
        "created_by": r["created_by"],
        "updated_at": r["updated_at"].isoformat(timespec="seconds"),
        "updated_by": r["updated_by"],
    }


def get_action(store: Store, action_id: int, *, today: date | None = None) -> dict[str, Any]:
    """One action by id."""
    ensure_tables(store)
    with store.connect() as conn:
        row = (
            conn.execute(sa.select(link_actions).where(link_actions.c.action_id == action_id))
            .mappings()
            .first()
        )
    if row is None:
        raise NotFoundError(f"No action {action_id}; `themes actions list` shows them.")
    return _row(row, today or date.today())


def list_actions(
    store: Store,
    *,
    rec_id: str | None = None,
    theme_id: int | None = None,
    status: str | None = None,
    overdue: bool = False,
    today: date | None = None,
) -> list[dict[str, Any]]:
    """Actions, optionally for one recommendation, theme or status, or only overdue ones."""
    ensure_tables(store)
    if status is not None and status not in STATUSES:
        raise ActionError(f"status '{status}' is not one of: {', '.join(STATUSES)}.")
    today = today or date.today()
    q = sa.select(link_actions).order_by(link_actions.c.action_id)
    if rec_id is not None:
        q = q.where(link_actions.c.rec_id == rec_id)
    if theme_id is not None:
        q = q.where(link_actions.c.theme_id == theme_id)
    if status is not None:
        q = q.where(link_actions.c.status == status)
    if overdue:
        q = q.where(link_actions.c.due_date < today, link_actions.c.status.in_(OPEN_STATUSES))
    with store.connect() as conn:
        rows = conn.execute(q).mappings().all()
    return [_row(r, today) for r in rows]


def actions_as_of(
    store: Store,
    as_of: date,
    *,
    rec_id: str | None = None,
    theme_id: int | None = None,
    status: str | None = None,
    overdue: bool = False,
) -> list[dict[str, Any]]:
    """Actions as they stood at the end of day `as_of` (UTC, as the store's timestamps),
    judged overdue on that day; shaped and filtered as `list_actions`' are.

    Actions created later are left out. Each action is its current row with the changes
    recorded after `as_of` undone, newest first, which is the same as replaying its
    history up to `as_of` and is still right for actions whose creation was not recorded.
    """
    ensure_tables(store)
    if status is not None and status not in STATUSES:
        raise ActionError(f"status '{status}' is not one of: {', '.join(STATUSES)}.")
    end = datetime.combine(as_of + timedelta(days=1), time())
    q = sa.select(link_actions).where(link_actions.c.created_at < end)
    if rec_id is not None:
        q = q.where(link_actions.c.rec_id == rec_id)
    h = link_action_history
    with store.connect() as conn:
        rows = conn.execute(q.order_by(link_actions.c.action_id)).mappings().all()
        changes = conn.execute(
            sa.select(h)
            .where(h.c.action_id.in_(q.with_only_columns(link_actions.c.action_id)))
            .order_by(h.c.id)
        ).mappings()
        history: dict[int, list[Any]] = {}
        for c in changes:
            history.setdefault(c["action_id"], []).append(c)
    out = []
    for r in rows:
        values = dict(r)
        past = [c for c in history.get(r["action_id"], []) if c["changed_at"] < end]
        later = [c for c in history.get(r["action_id"], []) if c["changed_at"] >= end]
        for c in reversed(later):
            for name, (old, _new) in json.loads(c["changes"]).items():
                if name in EDITABLE:
                    values[name] = old
        values["due_date"] = parse_due(values["due_date"])
        last = past[-1] if past else None
        values["updated_at"] = last["changed_at"] if last else r["created_at"]
        values["updated_by"] = last["changed_by"] if last else r["created_by"]
        a = _row(values, as_of)
        if (
            (theme_id is None or a["theme_id"] == theme_id)
            and (status is None or a["status"] == status)
            and (a["overdue"] or not overdue)
        ):
            out.append(a)
    return out


def flagged_for_theme(flagged: dict[str, Any], theme_id: int) -> dict[str, Any]:
    """`links.flagged_actions` narrowed to one theme: the overdue actions recorded against
    it (as `list_actions(theme_id=...)` selects them) and its strong links with no action."""
    return {
        **flagged,
        "overdue": [a for a in flagged["overdue"] if a["theme_id"] == theme_id],
        "strong_without_action": [
            g for g in flagged["strong_without_action"] if g["theme_id"] == theme_id
        ],
    }


def action_history(store: Store, action_id: int) -> list[dict[str, Any]]:
    """Every change to an action, oldest first: when, who, and {field: [old, new]}."""
    get_action(store, action_id)
    with store.connect() as conn:
        rows = conn.execute(
            sa.select(link_action_history)
            .where(link_action_history.c.action_id == action_id)
            .order_by(link_action_history.c.id)
        ).mappings()
        return [
            {
                "changed_at": r["changed_at"].isoformat(timespec="seconds"),
                "changed_by": r["changed_by"],
                "changes": json.loads(r["changes"]),
            }
            for r in rows
        ]
