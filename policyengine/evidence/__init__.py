"""Evidence: one zip bundle per evaluation, kept in a store an auditor can list and verify.

``bundle`` owns the zip format (members, manifest, statement, member checks); ``records`` the linked
records (outcomes, reviews) and what counts as a deployment; ``outcomes`` recording them; ``signing`` the
in-toto statement and its DSSE envelope; ``chain`` the hash-chain walk; ``store`` the base
every store shares; ``archive`` the local folder (``LocalArchive``) and ``s3`` the bucket
(``S3Archive``); ``stores`` chooses one by URL; ``history`` finds the previous deploy in an
archive; ``index`` the SQLite query cache; ``audit`` reading and exporting bundles.

The package itself imports nothing, so that its modules never form a loop through it.
"""
