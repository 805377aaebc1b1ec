"""The stores: the base every store shares, the folder, S3 and git stores, and what is appended to them.

The package itself imports nothing, so that its modules never form a loop through it.
"""
