"""Renderers: pure functions from a decision to text, JUnit XML, Markdown."""
