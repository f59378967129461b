"""Plain helpers shared by the tests: tenants built through the real services, the gateway's
error shape and Redis state, waiting for delayed effects, and the servers the tests run.

Fixtures live in the conftest files; they and the tests import from here, never from a conftest.
"""
