"""The command line: parse, call one library function, render. Nothing more.

Only this package imports click. Library code raises MeshPKIError subclasses;
`options.MeshGroup` turns them into one clear line and exit 1 (InputError:
exit 2), so no traceback ever reaches a user. Usage errors are one line too.
Text output is built in render.py; the fleet file fills option defaults
through click's `default_map` (options.py).

    group.py             the `meshpki` group and main()
    options.py           shared options, option types, Settings (store + fleet file)
    secrets.py           passphrases and PINs: file, environment or prompt
    console.py           stdout/stderr, progress, per-cluster blocks of a fleet run
    ca_commands.py       init-root, issue, rotate, rotate-root, revoke, crl, history, ...
    cluster_commands.py  push, verify, audit, remote-secret
    site_commands.py     csr, sign, complete
"""

from meshpki.cli import ca_commands, cluster_commands, site_commands  # noqa: F401 (they register the commands)
from meshpki.cli.ca_commands import REVOKE_REASONS
from meshpki.cli.group import cli, main

__all__ = ["REVOKE_REASONS", "cli", "main"]
