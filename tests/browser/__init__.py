"""The console's tests in a real browser (Debian's Chromium driven by Playwright).

A package, so that its one `argus server` (`conftest.console`) lives for these tests only."""
