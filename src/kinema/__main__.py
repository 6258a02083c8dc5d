"""``python -m kinema`` = the ``kinema`` command."""

from kinema.cli import main

main()
