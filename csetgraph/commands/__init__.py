"""The package's commands: ``csetgraph <name> ...`` runs ``csetgraph.commands.<name>.main``.

Each module exposes ``main(argv: list[str] | None = None) -> int`` and runs its body through
:func:`csetgraph.errors.run_command`: a user mistake is one line on stderr and exit status 2,
``--debug`` shows the traceback. ``scripts/<name>.py`` are shims calling the same ``main``.
"""
