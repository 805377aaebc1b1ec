"""Choose an evidence store by its URL. Sits above the store implementations, which share
``store.EvidenceStore`` and never import each other or this module."""

from __future__ import annotations

from policyengine.evidence.stores.base import EvidenceStore


def is_folder_url(url: str) -> bool:
    """Whether ``url`` names a local folder (the one place that tells store URLs apart, with ``open_store``)."""
    return not url.startswith(("git:", "git+", "s3://"))


def open_store(url: str) -> EvidenceStore:
    """Return the store at ``url``: ``s3://bucket/prefix``, ``git:REF``, ``git+URL#REF`` or a local folder."""
    if url.startswith(("git:", "git+")):
        from policyengine.evidence.stores.git import GitArchive

        return GitArchive(url)
    if url.startswith("s3://"):
        from policyengine.evidence.stores.s3 import S3Archive

        return S3Archive(url)
    from policyengine.evidence.stores.folder import LocalArchive

    return LocalArchive(url)
