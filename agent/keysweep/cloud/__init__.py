"""Agentless: keys held in the AWS control plane (``keysweep cloud``) and where each key is used (``keysweep trail``).

Each service reader (one module each) lists its resources read-only and yields :class:`items.Item` values —
(resource, field, text or a package archive) — which :mod:`keysweep.cloud.sweep` feeds to the scan's own
detector, so pairing, decoding, examples, fingerprints and verification work exactly as on a host.
"""

from keysweep.models import HostContext


def cloud_context(account: str, region: str) -> HostContext:
    """The host context of an agentless sweep of one account and region (what a fleet report shows it as)."""
    return HostContext(
        kind="cloud",
        hostname=f"aws:{account}:{region}",
        host_id=f"cloud:{account}:{region}",
        account_id=account,
        region=region,
    )
