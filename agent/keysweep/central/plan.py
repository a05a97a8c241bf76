"""`keysweep plan`: for every key the fleet found (and every key the audit lists), the ordered steps that remove it.

``replace`` -> ``deploy`` -> ``confirm-unused`` -> ``deactivate`` -> ``delete-key`` -> ``delete-user``. Each step is
judged on its own (``done``, ``open``, ``unknown`` without IAM facts, ``not-needed``), then in order: a step that
is not done holds every later one that is not done (``waiting``, no commands, the reason named). So a key still on a
host or used within the quiet period is never offered for deactivation or deletion, and its user never for deletion.

Pure functions over the store's records and the audit's result; nothing here calls AWS.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from keysweep import timeutil
from keysweep.central.audit import AuditItem, AuditResult, HostKey, place
from keysweep.central.evidence import keysweep_use, verification_times
from keysweep.central.fleet_report import parse_time
from keysweep.central.key_states import KEY_STATES, KeyState
from keysweep.central.records import FindingRecord, HostRecord
from keysweep.cloud.trail import KeyUsage, Source

STEPS = ("replace", "deploy", "confirm-unused", "deactivate", "delete-key", "delete-user")
# the key's progress (KEY_STATES, which `plan --mark` records) is named after the last step done in order
_STATE_AFTER = {"deploy": "replaced", "confirm-unused": "unused", "deactivate": "deactivated", "delete-key": "deleted"}

DONE, OPEN, UNKNOWN, NOT_NEEDED, WAITING = "done", "open", "unknown", "not-needed", "waiting"
# audit checks about one key whose commands deactivate or delete it
_KEY_CHECKS = ("never-used-key", "unused-key", "old-key", "inactive-key", "console-user-with-keys")
NO_IAM = "no IAM facts (no credentials, or the owning account was not audited)"


@dataclass(frozen=True)
class PlanOptions:
    quiet_days: int = 14  # no use but keysweep's for this long before deactivation
    inactive_days: int = 30  # inactive this long before the key is deleted
    rereport_hours: float = 25.0  # an agent re-reports a place daily: a newer sweep without it means it is gone
    now: datetime | None = None

    @property
    def current_time(self) -> datetime:
        return self.now or timeutil.now()


@dataclass(frozen=True)
class PlanStep:
    name: str
    state: str  # done | open | unknown | not-needed | waiting
    reason: str
    commands: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.name, "state": self.state, "reason": self.reason, "commands": list(self.commands)}


@dataclass(frozen=True)
class KeyPlan:
    key_id: str
    account_id: str | None
    user: str | None
    iam_status: str | None  # Active | Inactive | deleted | None (not known)
    locations: tuple[tuple[str, str], ...]  # (host, place) the store says still hold the key
    cleared: tuple[tuple[str, str], ...]  # places whose host swept again without reporting it
    checks: tuple[str, ...]  # the audit items about this key
    steps: tuple[PlanStep, ...]
    history: tuple[KeyState, ...] = ()  # the states the store recorded, in time order
    found_at: str | None = None  # the first time the fleet reported it (or the first record of a state)

    @property
    def state(self) -> str:
        """found -> replaced -> unused -> deactivated -> deleted: after the last step done in order."""
        state = KEY_STATES[0]
        for step in self.steps:
            if step.state not in (DONE, NOT_NEEDED):
                break
            state = _STATE_AFTER.get(step.name, state)
        return state

    @property
    def next_step(self) -> PlanStep | None:
        return next((s for s in self.steps if s.state not in (DONE, NOT_NEEDED)), None)

    def to_dict(self) -> dict[str, Any]:
        nxt = self.next_step
        return {
            "key_id": self.key_id,
            "account_id": self.account_id,
            "user": self.user,
            "iam_status": self.iam_status,
            "state": self.state,
            "next_step": nxt.name if nxt else None,
            "locations": [{"host": h, "place": p} for h, p in self.locations],
            "cleared_locations": [{"host": h, "place": p} for h, p in self.cleared],
            "checks": list(self.checks),
            "steps": [s.to_dict() for s in self.steps],
            "history": [h.to_dict() for h in self.history],
            "found_at": self.found_at,
        }


@dataclass(frozen=True)
class Plan:
    keys: tuple[KeyPlan, ...]
    options: PlanOptions
    iam: bool  # whether IAM facts came from an audit
    notes: tuple[str, ...] = ()
    user_items: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    trail_days: int | None = None  # the CloudTrail look-back when the plan read it (--trail)

    def to_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = defaultdict(int)
        for k in self.keys:
            counts[k.state] += 1
        return {
            "generated_at": timeutil.iso(self.options.current_time, "auto"),
            "iam": self.iam,
            "quiet_days": self.options.quiet_days,
            "inactive_days": self.options.inactive_days,
            "states": {s: counts.get(s, 0) for s in KEY_STATES},
            "keys": [k.to_dict() for k in self.keys],
            "notes": list(self.notes),
            "trail_days": self.trail_days,
        }


# ---------------------------------------------------------------------------------------------------- facts


@dataclass
class _Facts:
    key_id: str
    account_id: str | None = None
    user: str | None = None
    iam_status: str | None = None
    last_used: datetime | None = None
    last_used_service: str | None = None
    judged_by_iam: bool = False
    records: list[FindingRecord] = field(default_factory=list)
    items: list[AuditItem] = field(default_factory=list)
    states: dict[str, KeyState] = field(default_factory=dict)  # the first record of each state
    trail: KeyUsage | None = None  # its CloudTrail events (keysweep's own calls counted apart), when looked up

    def marked(self, state: str) -> KeyState | None:
        return self.states.get(state)


def _cleared(
    rec: FindingRecord, hosts: Mapping[str, HostRecord], options: PlanOptions, replaced: KeyState | None = None
) -> bool:
    """The host has swept and reported since the place would have been re-reported, or a person marked the key
    replaced after the host last reported it there: the key is no longer there."""
    host = hosts.get(rec.host_id)
    seen = parse_time(rec.last_seen)
    beat = parse_time(host.last_heartbeat) if host else None
    marked = parse_time(replaced.at) if replaced else None
    if seen is not None and marked is not None and marked > seen:
        return True
    return seen is not None and beat is not None and beat - seen > timedelta(hours=options.rereport_hours)


def _user_of(arn: str | None) -> str | None:
    """The user name of an IAM user ARN (``arn:aws:iam::1:user/path/NAME``), as the verification saw the owner."""
    resource = (arn or "").split(":", 5)[-1]
    return resource.rsplit("/", 1)[-1] if resource.startswith("user/") else None


def _gather(
    records: Sequence[FindingRecord], audit: AuditResult | None, states: Iterable[KeyState] = ()
) -> dict[str, _Facts]:
    facts: dict[str, _Facts] = {}
    recorded: dict[str, dict[str, KeyState]] = defaultdict(dict)
    for st in sorted(states, key=lambda x: x.at):
        recorded[st.key_id].setdefault(st.state, st)
    for rec in records:
        if not rec.key_id.startswith("AKIA"):  # temporary keys expire by themselves: nothing to remove in IAM
            continue
        f = facts.setdefault(rec.key_id, _Facts(rec.key_id))
        f.records.append(rec)
        f.account_id = f.account_id or rec.account_id
        f.user = f.user or _user_of(rec.owner_arn)
    for key_id, by_state in recorded.items():
        if key_id in facts or audit is None:
            facts.setdefault(key_id, _Facts(key_id)).states = by_state
    if audit is None:
        return facts
    audited = {a.account_id for a in audit.accounts if not a.error}
    known = {k.key_id: k for a in audit.accounts for k in a.keys}
    host_keys: dict[str, HostKey] = {hk.key_id: hk for hk in audit.host_keys}
    for item in audit.items:
        if item.key_id and (item.check in _KEY_CHECKS or item.check == "key-on-hosts"):
            facts.setdefault(item.key_id, _Facts(item.key_id, item.account_id, item.user)).items.append(item)
    for key_id, by_state in recorded.items():
        facts.setdefault(key_id, _Facts(key_id)).states = by_state
    for key_id, f in facts.items():
        info, hk = known.get(key_id), host_keys.get(key_id)
        if info is not None:
            f.account_id, f.user, f.iam_status, f.judged_by_iam = info.account_id, info.user, info.status, True
        elif f.account_id in audited:  # its account was read and no user holds it any more
            f.iam_status, f.judged_by_iam = "deleted", True
        if hk is not None and hk.known:
            f.user = hk.user or f.user
            f.last_used, f.last_used_service = hk.last_used, hk.last_used_service
        for item in f.items:
            used = item.details.get("last_used")
            if f.last_used is None and isinstance(used, datetime):
                f.last_used, f.last_used_service = used, item.details.get("last_used_service")
    return facts


# ---------------------------------------------------------------------------------------------------- steps

_KINDS = {"fleet-host": "fleet host", "outside-aws": "outside AWS", "aws-service": "an AWS service"}


def _where(source: Source) -> str:
    """A CloudTrail source address and what it resolves to: a fleet host, an instance or other compute of the
    account without the agent, an AWS service, outside AWS."""
    kind = source.kind or "not resolved"
    label = _KINDS.get(kind, f"{kind} without the agent")
    return f"{source.ip} ({label}{' ' + source.resource if source.resource else ''})"


def _trail_sources(f: _Facts, since: datetime | None = None) -> list[Source]:
    """The key's CloudTrail sources other than keysweep's own calls (last used at or after ``since``), newest
    first."""
    found = [
        s
        for s in (f.trail.sources.values() if f.trail else ())
        if since is None or ((t := parse_time(s.last)) is not None and t >= since)
    ]
    return sorted(found, key=lambda s: (s.last, s.ip), reverse=True)


def _replace(f: _Facts, on_hosts: bool) -> PlanStep:
    used = _trail_sources(f)
    attach = tuple(f"# attach the role where the key is used: {_where(s)}, last {s.last}" for s in used)
    # used after the last time a host reported it (or never on a host): a place the fleet does not know holds it
    last_seen = max((t for t in (parse_time(r.last_seen) for r in f.records) if t is not None), default=None)
    elsewhere = [s for s in used if last_seen is None or (parse_time(s.last) or last_seen) > last_seen]
    if not on_hosts and elsewhere:
        why = "no host reports it" if f.records else "no host or cloud resource of the fleet holds it"
        return PlanStep(
            "replace",
            OPEN,
            f"{why}, but CloudTrail shows it used from {len(elsewhere)} address(es) "
            f"since, last {_where(elsewhere[0])} at {elsewhere[0].last}: give each a role",
            attach,
        )
    if not on_hosts and not f.records:
        return PlanStep("replace", NOT_NEEDED, "no host or cloud resource of the fleet holds it")
    commands: list[str] = []
    for item in f.items:
        for entry in item.details.get("replacement") or ():
            commands += [c for c in entry.get("commands") or () if c not in commands]
    source = "the user's exact permissions, read from IAM"
    if not commands:  # no audit of the owner: the agents' own suggestions (their permissions as the host saw them)
        for rec in f.records:
            commands += [c for c in (rec.suggestion or {}).get("commands") or () if c not in commands]
        source = "the agents' suggestions (audit the owning account for the user's exact permissions)"
    if not on_hosts:
        return PlanStep("replace", DONE, "no host reports the key any more" + _by_mark(f))
    hosts = sorted({r.hostname or r.host_id for r in f.records})
    more = f" and {len(used) - 3} more address(es) (see the commands)" if len(used) > 3 else ""
    trail = f"; CloudTrail shows it used from {', '.join(_where(s) for s in used[:3])}{more}" if used else ""
    return PlanStep(
        "replace",
        OPEN,
        f"give {', '.join(hosts)} a role with {source}; attach it there{trail}",
        tuple(commands) + attach,
    )


def _by_mark(f: _Facts) -> str:
    mark = f.marked("replaced")
    return f" (marked replaced by {mark.actor} at {mark.at})" if mark and mark.source == "mark" else ""


def _deploy(f: _Facts, locations: Sequence[tuple[str, str]]) -> PlanStep:
    if not locations:
        reason = ("no place holds it" + _by_mark(f)) if f.records else "no host or cloud resource of the fleet holds it"
        return PlanStep("deploy", DONE if f.records else NOT_NEEDED, reason)
    commands = tuple(
        f"# on {host}: remove {f.key_id} from {place}, then let the agent sweep again" for host, place in locations
    )
    return PlanStep(
        "deploy", OPEN, f"still at {len(locations)} place(s): switch each to the role and remove the key", commands
    )


def _confirm_unused(f: _Facts, options: PlanOptions, verified: Sequence[datetime]) -> PlanStep:
    """IAM's last use judged as before; then CloudTrail, when looked up, holds the step open while it shows a use
    other than keysweep's own within the quiet period (IAM's last-used can lag, and names no address)."""
    step = _confirm_unused_iam(f, options, verified)
    if f.trail is None or step.state not in (DONE, OPEN) or f.iam_status in ("Inactive", "deleted"):
        return step
    quiet = timedelta(days=options.quiet_days)
    recent = _trail_sources(f, options.current_time - quiet)
    if not recent:
        own = f", {f.trail.keysweep_events} call(s) of keysweep's own not counted" if f.trail.keysweep_events else ""
        return PlanStep(
            step.name, step.state, f"{step.reason}; CloudTrail: no use in the quiet period{own}", step.commands
        )
    last = recent[0]
    when = parse_time(last.last) or options.current_time
    more = f" and {len(recent) - 1} other address(es)" if len(recent) > 1 else ""
    seen = f"CloudTrail: last used {_day(when)} from {_where(last)}{more}"
    lookup = (f"aws cloudtrail lookup-events --lookup-attributes AttributeKey=AccessKeyId,AttributeValue={f.key_id}",)
    if step.state == OPEN:
        return PlanStep(step.name, OPEN, f"{step.reason}; {seen}", step.commands + lookup)
    left = quiet - (options.current_time - when)
    return PlanStep(
        step.name,
        OPEN,
        f"{seen}: wait until {options.quiet_days} quiet days have passed "
        f"({left.days + 1} more day(s)), then look again",
        step.commands + lookup,
    )


def _confirm_unused_iam(f: _Facts, options: PlanOptions, verified: Sequence[datetime]) -> PlanStep:
    check = (f"aws iam get-access-key-last-used --access-key-id {f.key_id}",)
    if f.iam_status in ("Inactive", "deleted"):
        return PlanStep("confirm-unused", DONE, f"the key is {f.iam_status.lower()}")
    if not f.judged_by_iam:
        mark = f.marked("unused")
        if mark is not None:
            return PlanStep(
                "confirm-unused", DONE, f"marked unused by {mark.actor} at {mark.at} (not checked: {NO_IAM})"
            )
        return PlanStep("confirm-unused", UNKNOWN, f"last use cannot be judged: {NO_IAM}", check)
    if f.last_used is None:
        return PlanStep("confirm-unused", DONE, "never used")
    own = keysweep_use(f.last_used, f.last_used_service, verified)
    if own is not None:
        return PlanStep("confirm-unused", DONE, f"last use was keysweep's own verification at {_day(own)}")
    quiet_since = options.current_time - f.last_used
    if quiet_since >= timedelta(days=options.quiet_days):
        return PlanStep("confirm-unused", DONE, f"unused since {_day(f.last_used)} ({quiet_since.days} days)")
    left = timedelta(days=options.quiet_days) - quiet_since
    return PlanStep(
        "confirm-unused",
        OPEN,
        f"used {_day(f.last_used)} ({f.last_used_service or '?'}): wait until "
        f"{options.quiet_days} quiet days have passed ({left.days + 1} more day(s)), then look again",
        check,
    )


def _deactivate(f: _Facts) -> PlanStep:
    if f.iam_status in ("Inactive", "deleted"):
        return PlanStep("deactivate", DONE, f"the key is {f.iam_status.lower()}")
    command = (f"keysweep audit --deactivate {f.key_id}",)
    if not f.judged_by_iam:
        mark = f.marked("deactivated")
        if mark is not None:
            return PlanStep("deactivate", DONE, f"marked deactivated by {mark.actor} at {mark.at}")
        return PlanStep("deactivate", UNKNOWN, f"status cannot be judged: {NO_IAM}", command)
    return PlanStep("deactivate", OPEN, "set it Inactive: a use now fails loudly and can be undone", command)


def _inactive_since(f: _Facts) -> datetime | None:
    """The earliest time the store knows the key inactive: its recorded deactivation, or the state's record."""
    mark = f.marked("deactivated")
    stamps = [parse_time(r.deactivated_at) for r in f.records] + [parse_time(mark.at) if mark else None]
    known = [s for s in stamps if s is not None]
    return min(known) if known else None


def _delete_key(f: _Facts, options: PlanOptions) -> PlanStep:
    if f.iam_status == "deleted":
        return PlanStep("delete-key", DONE, "no user of its audited account holds it any more")
    if not f.judged_by_iam or not f.user:
        mark = f.marked("deleted")
        if mark is not None:
            return PlanStep("delete-key", DONE, f"marked deleted by {mark.actor} at {mark.at}")
        return PlanStep("delete-key", UNKNOWN, f"cannot be judged: {NO_IAM}")
    command = (f"aws iam delete-access-key --user-name {f.user} --access-key-id {f.key_id}",)
    since = _inactive_since(f)
    if since is None:
        return PlanStep(
            "delete-key",
            WAITING,
            f"inactive since a time keysweep did not record; the "
            f"{options.inactive_days}-day wait counts from when it is recorded (keysweep plan --mark "
            f"{f.key_id} deactivated)",
        )
    days = (options.current_time - since).days
    if days < options.inactive_days:
        return PlanStep(
            "delete-key",
            WAITING,
            f"inactive since {_day(since)}: {options.inactive_days - days} more "
            f"day(s) of the {options.inactive_days}-day wait before deleting",
        )
    return PlanStep("delete-key", OPEN, f"inactive since {_day(since)} ({days} days)", command)


def _delete_user(f: _Facts, user_items: Mapping[tuple[str, str], AuditItem]) -> PlanStep:
    if not f.judged_by_iam or not f.user:
        return PlanStep("delete-user", UNKNOWN, f"cannot be judged: {NO_IAM}")
    if f.iam_status != "deleted":
        return PlanStep(
            "delete-user", WAITING, f"judged once the key is deleted: {f.user} goes only when it has no credential left"
        )
    item = user_items.get((f.account_id or "", f.user))
    if item is None:
        return PlanStep(
            "delete-user",
            NOT_NEEDED,
            f"the audit does not list {f.user} as without credentials: it "
            "still holds one (an active key, a console password, another credential) or is gone",
        )
    if not item.commands:
        return PlanStep("delete-user", WAITING, item.action)
    return PlanStep(
        "delete-user",
        OPEN,
        f"{f.user} has no credentials left; its inline policies are saved to files before they are deleted",
        item.commands,
    )


def _in_order(steps: Sequence[PlanStep]) -> tuple[PlanStep, ...]:
    """A step not done holds every later step that is not done: no commands, the reason names the blocker."""
    out: list[PlanStep] = []
    blocker: PlanStep | None = None
    for step in steps:
        if blocker is not None and step.state not in (DONE, NOT_NEEDED):
            step = PlanStep(step.name, WAITING, f"waits for {blocker.name} ({blocker.state}): {step.reason}")
        elif blocker is None and step.state not in (DONE, NOT_NEEDED):
            blocker = step
        out.append(step)
    return tuple(out)


def _day(when: datetime) -> str:
    return when.astimezone(timeutil.UTC).strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------------------------------------------- entry point


def build_plan(
    records: Iterable[FindingRecord],
    hosts: Iterable[HostRecord],
    audit: AuditResult | None,
    options: PlanOptions | None = None,
    states: Iterable[KeyState] = (),
    trail: Mapping[str, KeyUsage] | None = None,
    trail_days: int | None = None,
) -> Plan:
    """The plan for every long-term key of the store and of the audit (None: no IAM facts), with the key states
    the store recorded (``states``) and, when looked up, each key's CloudTrail usage over ``trail_days``."""
    options = options or PlanOptions()
    records = list(records)
    by_host = {h.host_id: h for h in hosts}
    verified = verification_times(records)
    states = list(states)
    by_key: dict[str, list[KeyState]] = defaultdict(list)
    for st in states:
        by_key[st.key_id].append(st)
    facts = _gather(records, audit, states)
    user_items = {
        (i.account_id, i.user or ""): i for i in (audit.items if audit else ()) if i.check == "user-without-credentials"
    }
    plans: list[KeyPlan] = []
    for key_id, f in sorted(facts.items()):
        f.trail = (trail or {}).get(key_id)
        places: dict[tuple[str, str], bool] = {}
        for rec in f.records:
            where = (rec.hostname or rec.host_id, place(rec.location))
            places[where] = places.get(where, False) or not _cleared(rec, by_host, options, f.marked("replaced"))
        held = tuple(sorted(p for p, still in places.items() if still))
        cleared = tuple(sorted(p for p, still in places.items() if not still))
        steps = [
            _replace(f, bool(held)),
            _deploy(f, held),
            _confirm_unused(f, options, verified.get(key_id, ())),
            _deactivate(f),
            _delete_key(f, options),
            _delete_user(f, user_items),
        ]
        history = tuple(sorted(by_key.get(key_id, ()), key=lambda x: (x.at, x.state)))
        found = min([r.first_seen for r in f.records] + [h.at for h in history], default=None)
        plans.append(
            KeyPlan(
                key_id,
                f.account_id,
                f.user,
                f.iam_status,
                held,
                cleared,
                tuple(dict.fromkeys(i.check for i in f.items)),
                _in_order(steps),
                history,
                found,
            )
        )
    notes = (
        []
        if audit is not None
        else [
            "No IAM facts: confirm-unused, deactivate, delete-key and delete-user cannot be judged. Run with "
            "credentials that may read IAM (or --account/--role-name, --organization)."
        ]
    )
    if audit is not None:
        notes += [f"account {a.account_id} not audited: {a.error}" for a in audit.failed_accounts]
    return Plan(tuple(plans), options, audit is not None, tuple(notes), trail_days=trail_days)


def observed_states(plan: Plan, actor: str, at: str) -> list[KeyState]:
    """The states this plan saw for itself (IAM status, the quiet period, the hosts' sweeps) and the store has no
    record of yet: recorded so progress and the wait before deletion survive the next run."""
    out: list[KeyState] = []
    for key in plan.keys:
        have = {h.state for h in key.history}
        steps = {s.name: s for s in key.steps}
        seen: list[str] = []
        if key.cleared and not key.locations:
            seen.append("replaced")
        if (
            plan.iam
            and steps["confirm-unused"].state == DONE
            and not steps["confirm-unused"].reason.startswith("marked")
        ):
            seen.append("unused")
        if key.iam_status in ("Inactive", "deleted"):
            seen.append("deactivated")
        if key.iam_status == "deleted":
            seen.append("deleted")
        out += [KeyState(key.key_id, st, actor, at, "observed") for st in seen if st not in have]
    return out


def burn_down(plan: Plan, days: int = 60) -> list[tuple[str, int]]:
    """Keys not yet deleted at the end of each day (UTC), over the last ``days`` days up to the plan's time: a key
    counts from when it was found until its recorded ``deleted`` state."""
    end = plan.options.current_time.astimezone(timeutil.UTC).date()
    spans: list[tuple[datetime, datetime | None]] = []
    for key in plan.keys:
        found = parse_time(key.found_at) or plan.options.current_time
        gone = next((parse_time(h.at) for h in key.history if h.state == "deleted"), None)
        spans.append((found, gone))
    if not spans:
        return []
    first = max(min(f for f, _ in spans).astimezone(timeutil.UTC).date(), end - timedelta(days=days - 1))
    out: list[tuple[str, int]] = []
    day = first
    while day <= end:
        close = datetime(day.year, day.month, day.day, tzinfo=timeutil.UTC) + timedelta(days=1)
        out.append((day.isoformat(), sum(1 for f, g in spans if f < close and (g is None or g >= close))))
        day += timedelta(days=1)
    return out
