"""``python -m dynconn`` = the ``dynconn`` command."""

from .cli import main

main()
