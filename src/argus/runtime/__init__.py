"""Code that runs inside users' Ray jobs, shipped to them through shared storage."""
