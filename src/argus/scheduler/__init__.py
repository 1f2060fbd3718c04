"""The scheduler: `tick(now)` for tests, `run()` for production."""
