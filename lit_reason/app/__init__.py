"""The application: the ``lit-reason`` CLI, evaluation, export and the quickstart, above the library."""
