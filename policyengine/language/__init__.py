"""The policy language and its tools: loading, the schema check, diff, explain, sources, policy tests.

The package itself imports nothing, so that its modules never form a loop through it.
"""
