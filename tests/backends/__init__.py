"""Store factories for the one contract suite.

Each module here exports ``FACTORIES``: a mapping of backend name to a zero-argument callable
returning an async context manager that yields a fresh, empty :class:`AsyncStore` owned by the
test (its own database, schema, key prefix or Redis db), and cleans up only what it created.
Sync twins are wrapped with :class:`tests.backends.adapt.AsyncOverSync` so the same async tests
exercise them, through threads, with real parallelism.
"""
