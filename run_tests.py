"""Run the whole test suite: ``python3 run_tests.py`` (extra arguments go to pytest).

Sets up ``.venv`` with the test extras first, exactly as launch.py does for the app.
"""

import subprocess
import sys

from app.bootstrap import ensure_chromium, ensure_environment

if __name__ == "__main__":
    ensure_chromium()
    ensure_environment("test")
    args = sys.argv[1:]
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args])
    if code == 5:  # pytest: no test was collected
        print("run_tests: pytest collected no test", file=sys.stderr)
        code = 0 if args else 1  # a selection may match nothing; the whole suite never should
    sys.exit(code)
