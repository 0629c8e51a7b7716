"""The embedded default that `make run` starts: SecantusDB, redis-server, a Celery worker and
beat, and the API, each as its own process. It imports `core` only (settings, keys, process
helpers); the parts it starts are command lines, never imports of `api` or `workers`."""
