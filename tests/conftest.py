from tiny_models import tiny, tiny_bundle  # noqa: F401  (fixtures)
