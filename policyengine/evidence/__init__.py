"""Evidence: one zip bundle per evaluation, kept in an archive an auditor can list and verify.

``bundle`` owns the zip format (members, manifest, member checks); ``archive`` owns where
bundles are kept (``LocalArchive``: atomic writes, the append-only index, verification).
"""

from policyengine.evidence.archive import BundleRef, LocalArchive, VerifyReport
from policyengine.evidence.bundle import VerifyProblem

__all__ = ["BundleRef", "LocalArchive", "VerifyProblem", "VerifyReport"]
