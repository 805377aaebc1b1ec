"""Evidence: one zip bundle per evaluation, kept in an archive an auditor can list and verify.

``bundle`` owns the zip format (members, manifest, statement, member checks); ``signing`` the
in-toto statement and its DSSE envelope; ``chain`` the hash-chain walk; ``store`` what every
store shares; ``archive`` the local folder (``LocalArchive``) and ``s3`` the bucket
(``S3Archive``); ``index`` the SQLite query cache; ``audit`` replay and export.
"""

from policyengine.evidence.archive import LocalArchive
from policyengine.evidence.bundle import VerifyProblem
from policyengine.evidence.store import BundleRef, EvidenceStore, VerifyReport, open_store

__all__ = ["BundleRef", "EvidenceStore", "LocalArchive", "VerifyProblem", "VerifyReport", "open_store"]
