"""Reading the workspace: its files, JUnit reports, Markdown plans, pipeline files and git.

The package itself imports nothing, so that its modules never form a loop through it.
"""
