"""``python -m supervisor`` is ``widget-supervisor``."""

from supervisor.cli import main

main()
