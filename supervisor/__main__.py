"""``python -m supervisor`` is ``widget-supervisor``."""

from supervisor.cli import main

if __name__ == "__main__":  # not when a spawned parser child imports this as __mp_main__
    main()
