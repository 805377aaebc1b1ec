"""The record format: what a bundle, a record, a chain, a catalogue and an index are.

The package itself imports nothing, so that its modules never form a loop through it.
"""
