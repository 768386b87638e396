"""``python -m gradlab.cli``: the ``gradlab`` command."""

from gradlab.cli import main

main()
