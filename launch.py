"""Start LoRA Studio: ``python3 launch.py`` (``--help`` lists the options).

The first run sets up ``.venv`` (torch first, then the project); later runs start at once.
"""

import sys

from app.bootstrap import ensure_environment

if __name__ == "__main__":
    if "-h" not in sys.argv and "--help" not in sys.argv:
        ensure_environment()
    from app.cli import main

    main()
