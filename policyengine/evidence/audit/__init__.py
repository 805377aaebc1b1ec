"""What auditors read: the export and its verification, the summary, reconcile and the witness.

The package itself imports nothing, so that its modules never form a loop through it.
"""
