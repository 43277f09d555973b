"""Failover end-to-end tooling: tiny fleet follower processes and `make bench-failover`."""
