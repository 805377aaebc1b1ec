"""The change lifecycle: emergencies, waivers, notifications and the platform witness.

The package itself imports nothing, so that its modules never form a loop through it.
"""
