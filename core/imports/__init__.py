"""Importing MovieLens releases: reading them (`source`, `download`, `release`), writing
them (`writer`), and the life of an import job (`jobs`). Workers and the command line call
in; nothing here calls back up."""
