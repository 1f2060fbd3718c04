"""What tests and the demo share: a sandbox of inputs on shared storage, and small fakes."""
