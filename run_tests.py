"""Run the whole test suite: ``python3 run_tests.py`` (extra arguments go to pytest; ``-n 0`` runs the tests
one after another in one process).

Sets up ``.venv`` with the test extras first, exactly as launch.py does for the app.
"""

import os
import subprocess
import sys

from app.bootstrap import ensure_chromium, ensure_environment

# Two pytest-xdist workers, a test file at a time each, in collection order (tests/conftest.py puts the
# longest files first). Half of the suite waits on servers, browsers and subprocesses: the second worker
# fills that time.
TWO_WORKERS = ["-n", "2", "--dist", "loadfile", "--no-loadscope-reorder"]

if __name__ == "__main__":
    ensure_chromium()
    ensure_environment("test")
    args = sys.argv[1:]
    env = dict(os.environ)
    if not any(arg.startswith(("-n", "--numprocesses")) for arg in args):  # ``-n 0``/``-n0``: this process
        args = [*TWO_WORKERS, *args]
        # One torch thread each: two workers of two threads on two cores made compute-bound tests up to
        # ten times slower (more OpenMP threads than cores: they preempt each other, and libgomp's idle
        # threads stop spinning, so each small op waits for a wake-up; see bench/RESULTS.md).
        env.setdefault("OMP_NUM_THREADS", "1")
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], env=env)
    if code == 5:  # pytest: no test was collected
        print("run_tests: pytest collected no test", file=sys.stderr)
        code = 0 if sys.argv[1:] else 1  # a selection may match nothing; the whole suite never should
    sys.exit(code)
