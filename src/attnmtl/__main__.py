"""``python -m attnmtl`` runs the command line."""

from attnmtl.cli import main

main()
