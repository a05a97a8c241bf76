"""Agentless: keys held in the AWS control plane (``keysweep cloud``) and where each key is used (``keysweep trail``).

Each service reader (one module each) lists its resources read-only and yields :class:`items.Item` values —
(resource, field, text or a package archive) — which :mod:`keysweep.cloud.sweep` feeds to the scan's own
detector, so pairing, decoding, examples, fingerprints and verification work exactly as on a host.
"""
