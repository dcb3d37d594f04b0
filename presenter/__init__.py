"""Presenter application: sources, streaming, server, CLI."""
