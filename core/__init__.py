"""The application core: everything the API, the workers and the importer share.

Settings, logging, the database and Beanie set-up, domain errors, password hashing and
tokens, the Redis cache and the task queue, the OpenID Connect client, child-process helpers,
and `services/` (keyword-only async functions that own every query and raise domain errors).
It imports `models` and libraries only: never `api`, `workers`, `seed`, `embedded` or `bench`.
"""
