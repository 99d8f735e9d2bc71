"""Load: eight people share one LoRA Studio on the bundled demo model for a fixed time.

    .venv/bin/python bench/load.py [--seconds 180] [--people 8] [--steps 20]

The app is started as the README says (``launch.py``, here on a free loopback port, its own temporary
outputs folder, with logins for every person). Half the people use the web UI's API through
``gradio_client`` (each logged in as their own user: a browser session each); the other half are
A1111 API clients (``/sdapi/v1/txt2img`` with their HTTP Basic login). Each submits a 64x64 job,
waits for it, and submits the next, until the time is up (a load test measures what a fixed time
serves; the jobs themselves are fixed: size, steps, seeds).

Reported: jobs completed, p50/p95 of the time from submitting to the finished picture (queue wait
plus the run), the server's memory growth (RSS after the first job of each person, against the
end), errors (target 0) and cross-user leaks (target 0): a result whose saved prompt is not the
person's own, a progress answer showing another person's job, and another person's picture served
by URL. Prints its figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "load-test-pw"


@dataclass
class Person:
    name: str
    kind: str  # "ui" or "api"
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_app(workdir: Path, people: list[Person]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    users = ",".join(f"{person.name}:{PASSWORD}" for person in people)
    log = open(workdir / "app.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), "--port", str(port), "--outputs-dir", str(workdir / "outputs"),
         "--auth", users, "--device", "cpu"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                  "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (workdir / "app.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the app stopped:\n{tail}")
        try:
            requests.get(url + "/sdapi/v1/options", auth=(people[0].name, PASSWORD), timeout=5)
            return process, url
        except requests.ConnectionError:
            time.sleep(0.5)
    raise RuntimeError("the app did not start")


def ui_person(person: Person, url: str, seeds: random.Random, steps: int, stop: float,
              warm: threading.Barrier) -> None:
    from gradio_client import Client

    client = Client(url, auth=(person.name, PASSWORD), verbose=False)
    first = True
    while time.monotonic() < stop or first:
        prompt = f"a red circle on a blue background, {person.name}"
        started = time.monotonic()
        try:
            info = client.predict(
                "demo-shapes", "Automatic", prompt, "", "Euler a", "Automatic", steps, 5, 64, 64,
                seeds.randrange(2**31), 1, 1, 1, "Original", [], False, api_name="/txt2img")[3]
            person.latencies.append(time.monotonic() - started)
            if not info.startswith(prompt):
                person.leaks.append(f"result of another person: {info.splitlines()[0]!r}")
        except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
            person.errors.append(f"{type(exc).__name__}: {exc}")
        if first:
            first = False
            warm.wait()


def api_person(person: Person, url: str, seeds: random.Random, steps: int, stop: float,
               warm: threading.Barrier) -> None:
    session = requests.Session()
    session.auth = (person.name, PASSWORD)
    first = True
    while time.monotonic() < stop or first:
        prompt = f"a green square on a white background, {person.name}"
        body = {"prompt": prompt, "steps": steps, "width": 64, "height": 64, "cfg_scale": 5,
                "sampler_name": "Euler a", "seed": seeds.randrange(2**31), "save_images": True,
                "override_settings": {"sd_model_checkpoint": "demo-shapes"}}
        started = time.monotonic()
        try:
            answer = session.post(url + "/sdapi/v1/txt2img", json=body, timeout=600)
            answer.raise_for_status()
            person.latencies.append(time.monotonic() - started)
            info = json.loads(answer.json()["info"])
            if any(not text.startswith(prompt) for text in info["infotexts"]):
                person.leaks.append("result of another person in infotexts")
            Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0]))).verify()
            progress = session.get(url + "/sdapi/v1/progress", timeout=30).json()
            if progress["state"]["job_count"] or progress["current_image"]:  # this person has no job now
                person.leaks.append(f"progress of another person's job: {progress['state']}")
        except Exception as exc:  # noqa: BLE001
            person.errors.append(f"{type(exc).__name__}: {exc}")
        if first:
            first = False
            warm.wait()


def owner_of_picture(path: Path) -> str | None:
    """The person whose prompt a saved picture carries (their name ends the prompt)."""
    with Image.open(path) as image:
        prompt = image.info.get("parameters", "").split("\n", 1)[0]
    return prompt.rsplit(", ", 1)[-1] if ", " in prompt else None


def cross_fetch(url: str, outputs: Path, people: list[Person]) -> tuple[int, int]:
    """(tries, served): each person logged in to the UI asks for someone else's saved picture by its path."""
    pictures = [(owner_of_picture(path), path) for path in sorted(outputs.rglob("*.png"))]
    tries = served = 0
    for person in people:
        others = [path for owner, path in pictures if owner not in (None, person.name)]
        if not others:
            continue
        cookies = login_cookies(url, person)
        answer = requests.get(f"{url}/gradio_api/file={others[-1]}", cookies=cookies, timeout=30)
        tries += 1
        if answer.status_code == 200 and answer.headers.get("content-type", "").startswith("image/"):
            served += 1
            person.leaks.append(f"served another person's picture: {others[-1].name}")
    return tries, served


def login_cookies(url: str, person: Person) -> dict[str, str]:
    session = requests.Session()
    session.post(url + "/login", data={"username": person.name, "password": PASSWORD}, timeout=30)
    return session.cookies.get_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--people", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    people = [Person(f"person{i}", "ui" if i % 2 == 0 else "api") for i in range(args.people)]
    with tempfile.TemporaryDirectory(prefix="lora-studio-load-") as tmp:
        process, url = start_app(Path(tmp), people)
        try:
            warm = threading.Barrier(len(people) + 1)
            stop = time.monotonic() + args.seconds
            threads = [threading.Thread(target=ui_person if p.kind == "ui" else api_person,
                                        args=(p, url, random.Random(i), args.steps, stop, warm), daemon=True)
                       for i, p in enumerate(people)]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            warm.wait()  # every person has had one job: the server has loaded what it keeps
            rss_warm = rss_mb(process.pid)
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - started
            rss_end = rss_mb(process.pid)
            tries, served = cross_fetch(url, Path(tmp) / "outputs", people)
        finally:
            process.terminate()
            process.wait(timeout=30)

    latencies = sorted(t for p in people for t in p.latencies)
    errors = [e for p in people for e in p.errors]
    leaks = [leak for p in people for leak in p.leaks]
    quantile = statistics.quantiles(latencies, n=20, method="inclusive") if len(latencies) >= 2 else [float("nan")] * 19
    figures = {
        "people": len(people),
        "seconds": round(elapsed, 1),
        "jobs_completed": len(latencies),
        "jobs_per_person": [len(p.latencies) for p in people],
        "wait_p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "wait_p95_s": round(quantile[18], 2),
        "rss_after_warmup_mb": round(rss_warm, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_growth_mb": round(rss_end - rss_warm, 1),
        "errors": len(errors),
        "leaks": len(leaks),
        "cross_user_fetches": tries,
        "cross_user_served": served,
    }
    for line in errors[:5] + leaks[:5]:
        print("  !", line)
    for key, value in figures.items():
        print(f"{key:>22}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
