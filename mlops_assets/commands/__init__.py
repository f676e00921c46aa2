"""The ``mlops-assets`` commands, one module each: a typed function that does the command's work and returns an
outcome, plus a thin ``main(args)`` that adapts the parsed command line to it and prints.

Nothing is imported here: ``cli.py`` imports only the module of the command that runs, so the light commands
(``rollback``, ``status``) do not pay for Dagster, scikit-learn or the graph.
"""
