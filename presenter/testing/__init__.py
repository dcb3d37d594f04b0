"""Test support shipped with the package: what the tests and the benchmarks both drive.

:mod:`presenter.testing.live_harness` runs ``presenter serve`` and headless Chromium viewers
(Playwright, a dev extra, imported only when a browser starts).
"""
