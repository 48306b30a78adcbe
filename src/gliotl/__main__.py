"""``python -m gliotl`` = the ``gliotl`` command."""

from gliotl.cli import main

main()
