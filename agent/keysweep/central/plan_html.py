"""`keysweep plan --format html`: the plan per key and the burn-down of keys, as one self-contained page built
with the fleet report's page, counter and chart helpers (same Content-Security-Policy, same escaping)."""

from __future__ import annotations

from keysweep import __version__
from keysweep.central.html_report import bar_chart, cards, esc, page
from keysweep.central.key_states import KEY_STATES
from keysweep.central.plan import KeyPlan, Plan, burn_down

STEP_COLOURS = {
    "done": "#2e7d32",
    "not-needed": "#78909c",
    "open": "#c62828",
    "unknown": "#ef6c00",
    "waiting": "#9e9e9e",
}
BURN_DOWN_DAYS = 60


def _step_rows(key: KeyPlan) -> str:
    rows = []
    for step in key.steps:
        commands = "".join(f"<pre>{esc(c)}</pre>" for c in step.commands)
        rows.append(
            f'<tr><td>{esc(step.name)}</td><td><span class="badge" style="background:'
            f'{STEP_COLOURS.get(step.state, "#607d8b")}">{esc(step.state)}</span></td>'
            f"<td>{esc(step.reason)}{commands}</td></tr>"
        )
    history = "".join(
        f"<li>{esc(h.state)} at {esc(h.at)}: {esc(h.source)} by {esc(h.actor)}"
        f"{' (' + esc(h.note) + ')' if h.note else ''}</li>"
        for h in key.history
    )
    places = "".join(f"<li>{esc(host)}: <code>{esc(place)}</code></li>" for host, place in key.locations)
    return (
        f"<table><thead><tr><th>Step</th><th>State</th><th>What to do</th></tr></thead><tbody>{''.join(rows)}"
        f"</tbody></table>"
        + (f"<p>Still at:</p><ul>{places}</ul>" if places else "")
        + (f"<p>Recorded:</p><ul>{history}</ul>" if history else "")
    )


def _key_rows(key: KeyPlan) -> str:
    nxt = key.next_step
    search = " ".join(
        [key.key_id, key.account_id or "", key.user or "", key.state, *(h for h, _ in key.locations)]
    ).lower()
    return (
        f'<tr class="ks-key" data-search="{esc(search)}"><td><code>{esc(key.key_id)}</code></td>'
        f"<td>{esc(key.account_id or '')}</td><td>{esc(key.user or '')}</td><td>{esc(key.iam_status or '?')}</td>"
        f"<td>{esc(key.state)}</td><td>{esc(nxt.name + ' (' + nxt.state + ')' if nxt else 'nothing left')}</td>"
        f"<td>{len({h for h, _ in key.locations})}</td></tr>"
        f'<tr class="ks-detail"><td colspan="7"><details{" open" if nxt and nxt.state == "open" else ""}>'
        f"<summary>steps</summary>{_step_rows(key)}</details></td></tr>"
    )


def render_plan_html(plan: Plan) -> str:
    d = plan.to_dict()
    states = d["states"]
    left = sum(1 for k in plan.keys if k.next_step is not None)
    counters = [(f"keys {s}", states[s], False) for s in KEY_STATES] + [("keys with a step left", left, left > 0)]
    chart = bar_chart("burn_down", burn_down(plan, BURN_DOWN_DAYS), "#1565c0")
    notes = "".join(f"<li>{esc(n)}</li>" for n in plan.notes)
    keys = "".join(_key_rows(k) for k in plan.keys) or '<tr><td colspan="7">No long-term keys.</td></tr>'
    subtitle = (
        f"generated {esc(d['generated_at'])} by keysweep {esc(__version__)}\n&middot; quiet period "
        f"{plan.options.quiet_days} days &middot; delete after {plan.options.inactive_days} days inactive"
    )
    body = f"""{cards(counters)}
<div class="charts"><figure><figcaption>Keys not yet deleted, per day (last {BURN_DOWN_DAYS} days)</figcaption>{chart}</figure></div>
{f"<section><h2>Notes</h2><ul>{notes}</ul></section>" if notes else ""}
<section><h2>Keys</h2><input id="ks-filter" type="search" placeholder="filter by key, account, user, state, host…">
<table><thead><tr><th>Key id</th><th>Account</th><th>User</th><th>IAM</th><th>State</th><th>Next step</th>
<th>Hosts</th></tr></thead><tbody>{keys}</tbody></table></section>"""
    return page(f"keysweep removal plan {d['generated_at']}", "keysweep removal plan", subtitle, body)
