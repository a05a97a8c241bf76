"""The fleet report as one self-contained HTML file: inline CSS, inline SVG charts drawn here, a little inline JS.

Nothing is fetched when the file is opened (a Content-Security-Policy allows no network at all). Every value
comes from hosts and is escaped with :func:`html.escape` after :func:`keysweep.textsafe.safe_text` (control and
bidi characters shown as escapes); the script reads only data-* attributes, never
builds markup from report data. The script marks the page when its charts are drawn (``data-charts-ready``) and
records script errors in ``#ks-errors``, so a headless browser can check the page rendered.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any

from keysweep import __version__
from keysweep.central.fleet_report import FleetKey, FleetReport, HostRow, coverage_summary
from keysweep.textsafe import safe_text

STATUS_COLOURS = {
    "live": "#c62828",
    "canary": "#6a1b9a",
    "unknown": "#ef6c00",
    "wrong_secret": "#8d6e63",
    "expired": "#78909c",
    "invalid": "#9e9e9e",
    "skipped": "#b0bec5",
    "unverified": "#fbc02d",
}
OPEN_LIVE_KEYS = 10
# what one page shows of a large fleet (the JSON and CSV outputs carry everything)
PAGE_KEYS = 1000  # key rows, the most urgent first
PAGE_LOCATIONS = 25  # places listed under each key
PAGE_SUGGESTIONS = 3  # suggestions shown under each key
PAGE_HOSTS = 500  # host rows: every host of a small fleet, else those needing attention first
CHARTS: tuple[tuple[str, str, str], ...] = (
    ("live_keys_by_account", "Live keys by account", "#c62828"),
    ("keys_by_status", "Keys by verification status", "status"),
    ("live_keys_by_compute_kind", "Live keys by compute kind", "#1565c0"),
    ("key_age", "Key age (since first seen on the fleet)", "#2e7d32"),
    ("hosts_affected", "Hosts affected", "#37474f"),
)

CSS = """
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1c2430;
background:#f5f6f8}header{background:#1c2430;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c8d0da}main{padding:20px 28px;max-width:1400px}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin-bottom:18px}.card{background:#fff;border-radius:8px;padding:12px 18px;
min-width:150px;box-shadow:0 1px 2px rgba(0,0,0,.08)}.card b{display:block;font-size:26px}.card.alert b{color:#c62828}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:14px;margin-bottom:22px}
figure{margin:0;background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
figcaption{font-weight:600;margin-bottom:6px}svg text{font:12px system-ui,sans-serif;fill:#1c2430}
section{background:#fff;border-radius:8px;padding:14px 18px;margin-bottom:18px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
h2{margin:0 0 10px;font-size:18px}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:5px 8px;
border-bottom:1px solid #e3e6ea;vertical-align:top}th{background:#eef0f3;font-weight:600}
code,pre{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}pre{background:#f0f2f5;padding:8px;border-radius:6px;
white-space:pre-wrap;word-break:break-all;margin:4px 0}.badge{display:inline-block;padding:1px 8px;border-radius:10px;
color:#fff;font-size:12px}details{margin:2px 0}summary{cursor:pointer}.muted{color:#68707c}
#ks-filter{padding:6px 10px;width:360px;max-width:100%;border:1px solid #c8d0da;border-radius:6px;margin-bottom:10px}
.silent{color:#c62828;font-weight:600}#ks-errors:empty{display:none}#ks-errors{background:#fdecea;color:#611a15;
padding:8px;border-radius:6px;margin-bottom:12px}
"""

# Checks every chart drew (an SVG with its bars or an explicit "no data" label), then marks the page; any script
# error is written into #ks-errors. The filter hides key rows whose data-search does not contain the query.
SCRIPT = """
(function(){
  var errors=document.getElementById('ks-errors');
  window.addEventListener('error',function(e){
    var p=document.createElement('div');p.className='ks-error';
    p.textContent='script error: '+(e.message||'unknown');errors.appendChild(p);
  });
  function ready(){
    var charts=document.querySelectorAll('svg.ks-chart'),drawn=0;
    for(var i=0;i<charts.length;i++){
      var c=charts[i],bars=c.querySelectorAll('rect.bar').length,empty=c.querySelectorAll('text.empty').length;
      var box=c.getBoundingClientRect();
      if((bars===Number(c.getAttribute('data-bars'))||empty===1)&&box.width>0&&box.height>0){drawn++;}
    }
    var status=document.getElementById('ks-status');
    if(drawn===charts.length&&charts.length>0){
      document.body.setAttribute('data-charts-ready',String(drawn));status.textContent='charts-ready:'+drawn;
    }else{
      status.textContent='charts-incomplete:'+drawn+'/'+charts.length;
      throw new Error('charts not drawn: '+drawn+' of '+charts.length);
    }
    var input=document.getElementById('ks-filter');
    if(input){input.addEventListener('input',function(){
      var q=input.value.toLowerCase(),rows=document.querySelectorAll('tr.ks-key');
      for(var j=0;j<rows.length;j++){
        var hit=(rows[j].getAttribute('data-search')||'').indexOf(q)>=0;
        rows[j].style.display=hit?'':'none';
        var d=rows[j].nextElementSibling;if(d&&d.classList.contains('ks-detail')){d.style.display=hit?'':'none';}
      }
    });}
  }
  if(document.readyState==='loading'){document.addEventListener('DOMContentLoaded',ready);}else{ready();}
})();
"""


def esc(value: Any) -> str:
    """Text for HTML content or a quoted attribute: markup escaped, control and bidi characters made visible."""
    return html.escape(safe_text(value), quote=True)


def bar_chart(name: str, data: Sequence[tuple[str, int]], colour: str, *, width: int = 460) -> str:
    """A horizontal bar chart as inline SVG; ``colour`` "status" colours each bar by verification status."""
    label_w, bar_h, gap, top = 150, 22, 8, 6
    values = [(str(lab), int(v)) for lab, v in data]
    if not values or all(v == 0 for _, v in values):
        return (
            f'<svg class="ks-chart" data-chart="{esc(name)}" data-bars="0" role="img" width="{width}" '
            f'height="40" viewBox="0 0 {width} 40"><text class="empty" x="8" y="24">no data</text></svg>'
        )
    top_value = max(v for _, v in values) or 1
    span = width - label_w - 50
    height = top + len(values) * (bar_h + gap)
    parts = [
        f'<svg class="ks-chart" data-chart="{esc(name)}" data-bars="{len(values)}" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
    ]
    for i, (label, value) in enumerate(values):
        y = top + i * (bar_h + gap)
        w = max(2, round(span * value / top_value)) if value else 0
        fill = STATUS_COLOURS.get(label, "#607d8b") if colour == "status" else colour
        shown = label if len(label) <= 22 else label[:21] + "…"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + bar_h - 6}" text-anchor="end">{esc(shown)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y}" width="{w}" height="{bar_h}" rx="3" fill="{esc(fill)}">'
            f"<title>{esc(label)}: {value}</title></rect>"
            f'<text x="{label_w + w + 6}" y="{y + bar_h - 6}">{value}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _badge(status: str) -> str:
    return f'<span class="badge" style="background:{STATUS_COLOURS.get(status, "#607d8b")}">{esc(status)}</span>'


def _suggestion(s: Mapping[str, Any]) -> str:
    source = s.get("hostname") or s.get("host_id")  # the host whose suggestion this is
    out = [f"<p><b>Replace with{f' (from {esc(source)})' if source else ''}:</b> {esc(s.get('summary'))}"]
    if s.get("role_name"):
        out.append(f" (role <code>{esc(s.get('role_name'))}</code>)")
    out.append(f' <span class="muted">{esc(s.get("kind"))}</span></p>')
    steps = s.get("steps") or []
    if steps:
        out.append("<ol>" + "".join(f"<li>{esc(step)}</li>" for step in steps) + "</ol>")
    cmds = list(s.get("commands") or [])
    if cmds:
        out.append("<pre>" + "\n".join(esc(f"$ {c}") for c in cmds) + "</pre>")
    cleanup = list(s.get("cleanup") or [])
    if cleanup:
        out.append("<p>Then retire the key:</p><pre>" + "\n".join(esc(f"$ {c}") for c in cleanup) + "</pre>")
    return "".join(out)


def _key_rows(k: FleetKey, *, open_details: bool = False) -> str:
    shown = list(islice(k.locations, PAGE_LOCATIONS))
    search = " ".join(
        [
            k.key_id,
            k.account_id or "",
            k.status,
            k.owner_arn or "",
            *k.hosts[:PAGE_LOCATIONS],
            *(loc.place for loc in shown),
            *k.compute_kinds,
        ]
    ).lower()
    row = (
        f'<tr class="ks-key" data-search="{esc(search)}"><td><code>{esc(k.key_id)}</code></td>'
        f"<td>{esc(k.account_id or '?')}</td><td>{_badge(k.status)}</td><td>{esc(k.owner_arn or '-')}</td>"
        f"<td>{len(k.hosts)}</td><td>{esc(', '.join(k.compute_kinds))}</td><td>{esc(k.first_seen[:10])}</td>"
        f"<td>{esc(k.last_seen[:10])}</td></tr>"
    )
    locs = "".join(
        f"<tr><td>{esc(loc.hostname)}</td><td>{esc(loc.host_kind)}</td><td><code>{esc(loc.place)}</code></td>"
        f"<td>{esc(loc.last_seen[:19])}</td></tr>"
        for loc in shown
    )
    if len(k.locations) > len(shown):
        locs += (
            f'<tr><td colspan="4" class="muted">and {len(k.locations) - len(shown)} more place(s), on '
            f"{len(k.hosts)} host(s) in all: the JSON and CSV reports list every place</td></tr>"
        )
    deact = f"<p><b>Deactivated</b> {esc(k.deactivated_at)} by {esc(k.deactivated_by)}</p>" if k.deactivated_at else ""
    suggestions = (
        "".join(_suggestion(s) for s in k.suggestions[:PAGE_SUGGESTIONS])
        or '<p class="muted">No suggestion reported.</p>'
    )
    if k.suggestions_total > PAGE_SUGGESTIONS:
        suggestions += (
            f'<p class="muted">{k.suggestions_total - PAGE_SUGGESTIONS} other host(s) suggest '
            "differently: see the JSON report.</p>"
        )
    detail = (
        f'<tr class="ks-detail"><td colspan="8"><details{" open" if open_details else ""}><summary>{len(k.locations)} location(s), owner and '
        f"replacement</summary><p><b>Owner:</b> {esc(k.owner_arn or 'unknown')} &middot; <b>fingerprint</b> "
        f"<code>{esc(k.fingerprint[:16])}</code> &middot; verified {esc(k.verified_at or 'never')}</p>{deact}"
        f"<table><tr><th>Host</th><th>Kind</th><th>Where</th><th>Last seen</th></tr>{locs}</table>"
        f"{suggestions}</details></td></tr>"
    )
    return row + detail


def _host_row(row: HostRow) -> str:
    h = row.coverage
    state = f'<span class="silent">{esc(h.state)}</span>' if row.silent else esc(h.state)
    return (
        f"<tr><td>{esc(h.hostname)}</td><td>{esc(h.kind)}</td><td>{esc(h.agent_version or '-')}</td>"
        f"<td>{esc(h.last_heartbeat or 'never')}</td><td>{state}</td><td>{row.keys}</td><td>{row.live_keys}</td>"
        f"<td>{esc(h.files_scanned if h.files_scanned is not None else '-')}</td><td>{len(h.errors)}</td></tr>"
    )


def page(title: str, heading: str, subtitle: str, body: str) -> str:
    """A self-contained page: the Content-Security-Policy (no network; only this module's script), the CSS, a
    header with ``heading`` and ``subtitle`` (markup, already escaped), ``body`` (markup) and the chart check
    script (which expects at least one chart)."""
    script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    csp = (
        f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'; img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{esc(title)}</title><style>{CSS}</style></head>
<body><header><h1>{esc(heading)}</h1><p>{subtitle}
&middot; <span id="ks-status">charts-pending</span></p></header>
<main><div id="ks-errors"></div>
{body}</main>
<script>{SCRIPT}</script></body></html>
"""


def cards(values: Sequence[tuple[str, int, bool]]) -> str:
    """The row of counters at the top of a page: (label, value, alert)."""
    inner = "".join(
        f'<div class="card{" alert" if alert else ""}"><b>{v}</b>{esc(label)}</div>' for label, v, alert in values
    )
    return f'<div class="cards">{inner}</div>'


def render_html(report: FleetReport) -> str:
    s = report.summary()
    generated = report.header()["generated_at"]
    counters = [
        ("keys found", s["keys"], False),
        ("live keys", s["live_keys"], s["live_keys"] > 0),
        ("places", s["locations"], False),
        ("hosts with live keys", s["hosts_with_live_keys"], False),
        ("hosts known", s["hosts"], False),
        ("silent hosts", s["silent_hosts"], s["silent_hosts"] > 0),
    ]
    charts = "".join(
        f"<figure><figcaption>{esc(title)}</figcaption>{bar_chart(name, report.charts.get(name, []), colour)}</figure>"
        for name, title, colour in CHARTS
    )
    # the first live keys are shown unfolded: their places and replacement are what the reader came for
    keys = (
        "".join(
            _key_rows(k, open_details=k.status == "live" and i < OPEN_LIVE_KEYS)
            for i, k in enumerate(islice(report.keys, PAGE_KEYS))
        )
        or '<tr><td colspan="8">No keys reported.</td></tr>'
    )
    if len(report.keys) > PAGE_KEYS:
        keys += (
            f'<tr><td colspan="8" class="muted">and {len(report.keys) - PAGE_KEYS} more key(s), less urgent: '
            "the JSON and CSV reports list every key</td></tr>"
        )
    rows = (
        report.hosts
        if len(report.hosts) <= PAGE_HOSTS
        else sorted(report.hosts, key=lambda h: not (h.silent or h.coverage.errors))[:PAGE_HOSTS]
    )
    hosts = "".join(_host_row(h) for h in rows) or '<tr><td colspan="9">No hosts reported.</td></tr>'
    if len(rows) < len(report.hosts):
        hosts += (
            f'<tr><td colspan="9" class="muted">and {len(report.hosts) - len(rows)} more host(s) (silent ones '
            "and those with errors are shown first): the JSON report lists every host</td></tr>"
        )
    subtitle = (
        f"generated {esc(generated)} by keysweep {esc(__version__)}\n&middot; silent = no heartbeat for "
        f"{report.silent_after.total_seconds() / 3600:g} h"
    )
    body = f"""{cards(counters)}
<div class="charts">{charts}</div>
<section><h2>Keys</h2><input id="ks-filter" type="search" placeholder="filter by key, account, host, path, owner…">
<table><thead><tr><th>Key id</th><th>Account</th><th>Status</th><th>Owner</th><th>Hosts</th><th>Compute</th>
<th>First seen</th><th>Last seen</th></tr></thead><tbody>{keys}</tbody></table></section>
<section><h2>Host coverage</h2><p>{esc(coverage_summary(report))}</p><table><thead><tr><th>Host</th><th>Kind</th><th>Agent</th><th>Last heartbeat</th>
<th>State</th><th>Keys</th><th>Live</th><th>Files scanned</th><th>Errors</th></tr></thead><tbody>{hosts}</tbody></table>
</section>"""
    return page(f"keysweep fleet report {generated}", "keysweep fleet report", subtitle, body)
