"""Evidence: one zip bundle per evaluation, kept in a store an auditor can list and verify.

Three rooms, whose imports point down (``pyproject.toml``, ``docs/architecture.md``):

* ``format``: what a bundle is: its members and manifest (``bundle``), the signed statement
  (``signing``), the chain walk (``chain``), linked records (``records``), the store catalogue
  (``catalogue``), the query cache (``index``), RFC 3161 tokens (``timestamp``), its HTML page
  (``report``) and the cells of every table (``tabular``);
* ``stores``: where it is kept: the base every store shares (``base``), the folder, S3 and git
  stores, ``factory`` (``open_store`` by URL), the previous deploy (``history``), records
  appended after the gate (``outcomes``) and reading a bundle back (``replay``);
* ``audit``: what auditors read: the export and its offline verification, the summary,
  ``reconcile``, the witness read-back, emergencies' states and identity checks.

The packages themselves import nothing, so that their modules never form a loop through them.
"""
