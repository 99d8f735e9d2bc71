"""Per-person files with logins: each user's pictures under outputs/<user>/, and the file routes serve a user
only their own files and uploads (app.file_access). Without logins nothing changes."""

from __future__ import annotations

import datetime as _dt
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

from app.engine.outputs import output_folder, user_folder, user_folders
from app.file_access import NOT_YOURS, FileAccess, FileRules, file_paths
from app.serving import CredentialsError, ServeOptions
from app_server import RunningApp, start_app

MODEL = "tiny-random-sd1"
USERS = {"amy": "pw1", "ben": "pw2"}
DAY = _dt.date(2026, 11, 25)


# ----- the save path and user names -------------------------------------------------------------------

def test_the_save_path_with_and_without_a_user(tmp_path: Path) -> None:
    assert output_folder(tmp_path, "txt2img", DAY) == tmp_path / "txt2img-images" / "2026-11-25"
    assert output_folder(tmp_path, "img2img", DAY, user="amy") == tmp_path / "amy" / "img2img-images" / "2026-11-25"
    assert output_folder(tmp_path, "inpaint", DAY, user="amy.lee@studio") == \
        tmp_path / "amy.lee@studio" / "inpaint-images" / "2026-11-25"


@pytest.mark.parametrize("name", ["", "a/b", "a\\b", "..", ".", ".hidden", "amy.", "a b", "jürgen", "x" * 65,
                                  "../amy", "amy\x00", "C:", "training", "Training", "txt2img-images", "demo-eval",
                                  "audit.log", "audit.log.1", "con", "NUL", "com1.txt", "lpt9"])
def test_unsafe_user_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="user name"):
        user_folder(name)
    with pytest.raises(CredentialsError, match="user name"):
        ServeOptions(credentials=(("amy", "pw"), (name, "pw")))


def test_names_that_differ_only_in_case_are_refused() -> None:
    assert user_folders(["amy", "ben", "amy"]) == {"amy": "amy", "ben": "ben"}
    with pytest.raises(ValueError, match="differ only in case"):
        user_folders(["amy", "Amy"])
    assert ServeOptions(credentials=(("Amy_1", "x"), ("b-2+z@lan", "y"))).user_folders == \
        {"Amy_1": "Amy_1", "b-2+z@lan": "b-2+z@lan"}


def test_engine_refuses_a_user_that_cannot_name_a_folder(tmp_path: Path) -> None:
    from app.engine import Engine, EngineConfig
    from app.engine.requests import Txt2ImgRequest

    engine = Engine(EngineConfig(models_dir=tmp_path / "models", outputs_dir=tmp_path / "outputs", device="cpu"))
    try:
        with pytest.raises(ValueError, match="cannot name a folder"):
            engine.submit(Txt2ImgRequest(prompt="x"), "api:x", user="../ben")
        assert engine.worker.active_jobs("api:x") == []
    finally:
        engine.shutdown()


def test_api_owner_names_carry_the_user() -> None:
    from app.api.context import api_owner, api_user

    assert (api_owner(None), api_user(api_owner(None))) == ("api", None)
    assert (api_owner("amy"), api_user(api_owner("amy"))) == ("api:amy", "amy")
    assert api_user("session:abc") is None and api_user("local") is None


# ----- the rules, without a server ----------------------------------------------------------------------

@pytest.fixture
def rules(tmp_path: Path) -> FileRules:
    outputs = tmp_path / "outputs"
    for folder in ("amy", "ben", "training", ".gradio-cache/abc", ".gradio-cache/def"):
        (outputs / folder).mkdir(parents=True)
    for name in ("amy/a.png", "ben/b.png", "training/s.png", "old.png", ".gradio-cache/abc/u.png",
                 ".gradio-cache/def/v.png"):
        (outputs / name).write_bytes(b"x")
    return FileRules(outputs, outputs / ".gradio-cache", {"amy": "amy", "ben": "ben"})


def test_rules_own_folders_shared_rest_and_handed_cache(rules: FileRules, tmp_path: Path) -> None:
    out = rules.outputs
    assert rules.refusal("amy", str(out / "amy" / "a.png")) is None
    assert rules.refusal("ben", str(out / "amy" / "a.png")) == NOT_YOURS
    assert rules.refusal("ben", f"{out}/ben/../amy/a.png") == NOT_YOURS  # resolved as Gradio opens it
    assert rules.refusal("ben", str(out / "AMY" / "a.png")) == NOT_YOURS  # one folder on macOS and Windows
    assert rules.refusal(None, str(out / "amy" / "a.png")) is not None
    for shared in ("training/s.png", "old.png"):
        assert rules.refusal("ben", str(out / shared)) is None
    assert rules.refusal("ben", str(tmp_path / "elsewhere.txt")) is None  # Gradio's own rules decide
    cached = str(out / ".gradio-cache" / "abc" / "u.png")
    assert rules.refusal("amy", cached) == NOT_YOURS  # nobody was handed it yet
    rules.hand("amy", cached)
    rules.hand("amy", str(out / "ben" / "b.png"))  # not in the cache: a handed path gives nothing
    assert rules.refusal("amy", cached) is None and rules.refusal("ben", cached) == NOT_YOURS
    assert rules.refusal("amy", str(out / "ben" / "b.png")) == NOT_YOURS
    (out / "training" / "link").symlink_to(out / "ben")
    assert rules.refusal("amy", str(out / "training" / "link" / "b.png")) == NOT_YOURS
    assert rules.refusal("amy", "bad\x00path") is not None


def test_paths_of_files_gone_from_the_cache_are_forgotten(rules: FileRules) -> None:
    kept = rules.outputs / ".gradio-cache" / "abc" / "u.png"
    rules.prune_at = 2
    rules.hand("amy", str(kept))
    rules.hand("amy", str(rules.outputs / ".gradio-cache" / "gone" / "1.png"))
    rules.hand("ben", str(rules.outputs / ".gradio-cache" / "gone" / "2.png"))
    assert rules.handed == {str(kept): {"amy"}}


def test_file_paths_finds_file_objects_only() -> None:
    data = {"msg": "process_completed", "output": {"data": [
        [{"image": {"path": "/c/1.png", "url": "http://h/gradio_api/file=/c/1.png"}, "caption": None}],
        "a prompt that mentions /c/2.png", ["replace", [0], {"path": "/c/3.png"}]]}}
    assert list(file_paths(data)) == ["/c/1.png", "/c/3.png"]


async def _call(middleware: FileAccess, method: str, path: str, body: bytes = b"",
                content_type: str = "application/json") -> tuple[int, bytes]:
    sent: list[dict] = []
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "query_string": b"",
             "headers": [(b"content-type", content_type.encode()), (b"accept-encoding", b"br")]}
    chunks = iter([{"type": "http.request", "body": body, "more_body": False}])

    async def receive() -> dict:
        return next(chunks, {"type": "http.disconnect"})

    async def send(message: dict) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_middleware_records_what_it_hands_out_and_checks_inputs(rules: FileRules) -> None:
    import asyncio

    cached = str(rules.outputs / ".gradio-cache" / "abc" / "u.png")
    other = str(rules.outputs / ".gradio-cache" / "def" / "v.png")
    seen: list[dict] = []

    async def gradio(scope, receive, send) -> None:
        seen.append(scope)
        if scope["path"] == "/gradio_api/upload":
            body, kind = json.dumps([cached]).encode(), b"application/json"
        elif scope["path"] == "/gradio_api/queue/data":
            body, kind = b"data: " + json.dumps({"output": {"data": [{"path": other}]}}).encode() + b"\n\n", \
                b"text/event-stream"
        else:
            body, kind = b"ok", b"text/plain"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]})
        await send({"type": "http.response.body", "body": body})

    users = iter([])
    middleware = FileAccess(gradio, rules, user_of=lambda scope: next(users))

    def call(user: str | None, *args: str | bytes) -> tuple[int, bytes]:
        nonlocal users
        users = iter([user])
        return asyncio.run(_call(middleware, *args))  # type: ignore[arg-type]

    assert call("amy", "GET", f"/gradio_api/file={cached}")[0] == 403
    assert call("amy", "POST", "/gradio_api/upload", b"", "multipart/form-data")[0] == 200
    assert not any(k == b"accept-encoding" for k, _ in seen[-1]["headers"])  # answers stay readable here
    assert call("amy", "GET", f"/gradio_api/file={cached}")[0] == 200
    status, text = call("ben", "GET", f"/gradio_api/file={cached}")
    assert status == 403 and text.decode() == NOT_YOURS
    assert call("ben", "GET", f"/gradio_api/file/{cached}")[0] == 403  # Gradio's other file route
    assert call("ben", "GET", "/gradio_api/queue/data")[0] == 200
    assert call("ben", "GET", f"/gradio_api/file={other}")[0] == 200
    join = json.dumps({"data": [{"path": cached, "meta": {"_type": "gradio.FileData"}}], "fn_index": 0}).encode()
    assert call("ben", "POST", "/gradio_api/queue/join", join)[0] == 403  # another person's upload as input
    assert call("amy", "POST", "/gradio_api/queue/join", join) == (200, b"ok")
    assert seen[-1]["path"] == "/gradio_api/queue/join"


# ----- the launched app with logins ------------------------------------------------------------------

@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    running = start_app(tmp_path_factory.mktemp("per-person"), "--auth", ",".join(f"{u}:{p}" for u, p in USERS.items()))
    yield running
    running.stop()


def login_cookies(app: RunningApp, user: str) -> dict[str, str]:
    session = requests.Session()
    assert session.post(app.url + "/login", data={"username": user, "password": USERS[user]}, timeout=30).ok
    return session.cookies.get_dict()


def settings(prompt: str, seed: int) -> list:
    """/txt2img's positional parameters (README): the tab's 13, clip skip, emphasis, styles, tiling."""
    return [MODEL, "Automatic", prompt, "", "Euler a", "Automatic", 3, 7, 64, 64, seed, 1, 1, 1, "Original", [], False]


@pytest.fixture(scope="module")
def pictures(app: RunningApp) -> dict[str, Path]:
    """Each user's picture, made through the UI's API with their login."""
    from gradio_client import Client

    made = {}
    for seed, user in enumerate(USERS, start=40):
        client = Client(app.url, auth=(user, USERS[user]), verbose=False)
        info = client.predict(*settings(f"a picture of {user}", seed), api_name="/txt2img")[3]
        assert info.startswith(f"a picture of {user}\n")
        (made[user],) = (app.outputs_dir / user / "txt2img-images").rglob(f"*-{seed}.png")
    return made


def status(app: RunningApp, path: Path | str, cookies: dict[str, str]) -> int:
    return requests.get(f"{app.url}/gradio_api/file={path}", cookies=cookies, timeout=30).status_code


def test_each_user_saves_under_their_own_folder(app: RunningApp, pictures: dict[str, Path]) -> None:
    day = _dt.date.today().isoformat()
    for user, picture in pictures.items():
        assert picture.parent == app.outputs_dir / user / "txt2img-images" / day
        with Image.open(picture) as image:
            assert image.info["parameters"].startswith(f"a picture of {user}\n")
    assert not (app.outputs_dir / "txt2img-images").exists()


def test_a_picture_is_served_to_its_owner_only(app: RunningApp, pictures: dict[str, Path]) -> None:
    amy, ben = login_cookies(app, "amy"), login_cookies(app, "ben")
    for picture in (pictures["amy"], pictures["amy"].resolve()):
        assert status(app, picture, amy) == 200
        refused = requests.get(f"{app.url}/gradio_api/file={picture}", cookies=ben, timeout=30)
        assert refused.status_code == 403 and "another user" in refused.text
        assert refused.headers["content-type"].startswith("text/plain")
    assert status(app, pictures["ben"], ben) == 200 and status(app, pictures["ben"], amy) == 403
    assert requests.get(f"{app.url}/gradio_api/file/{pictures['amy']}", cookies=ben, timeout=30).status_code == 403
    assert status(app, pictures["amy"], {}) in (401, 403)  # no login: nothing


def test_the_gallery_copies_gradio_serves_are_their_owners(app: RunningApp) -> None:
    """What the browser gets: the gallery's server URL (Gradio's copy in its cache), not downloaded."""
    from gradio_client import Client

    amy, ben = login_cookies(app, "amy"), login_cookies(app, "ben")
    client = Client(app.url, auth=("amy", USERS["amy"]), verbose=False, download_files=False)
    (item,) = client.predict(*settings("amy in the browser", 77), api_name="/txt2img")[0]
    url = item["image"]["url"]
    assert "/gradio_api/file=" in url and "/.gradio-cache/" in url
    picture = requests.get(url, cookies=amy, timeout=30)
    assert picture.status_code == 200 and picture.headers["content-type"].startswith("image/")
    refused = requests.get(url, cookies=ben, timeout=30)
    assert refused.status_code == 403 and refused.text == NOT_YOURS


def fn_index(app: RunningApp, cookies: dict[str, str], api_name: str) -> int:
    config = requests.get(f"{app.url}/config", cookies=cookies, timeout=30).json()
    return next(dep["id"] for dep in config["dependencies"] if dep.get("api_name") == api_name)


def test_an_upload_is_its_uploaders_only(app: RunningApp) -> None:
    amy, ben = login_cookies(app, "amy"), login_cookies(app, "ben")
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "green").save(buffer, format="PNG")
    answer = requests.post(f"{app.url}/gradio_api/upload", cookies=amy, timeout=30,
                           files={"files": ("amys-upload.png", buffer.getvalue(), "image/png")})
    assert answer.ok, answer.text
    (path,) = answer.json()
    assert Path(path).is_relative_to(app.outputs_dir.resolve() / ".gradio-cache")
    assert status(app, path, amy) == 200
    assert status(app, path, ben) == 403
    png_info = fn_index(app, ben, "png_info")
    file = {"path": path, "orig_name": "amys-upload.png", "meta": {"_type": "gradio.FileData"}}
    used = requests.post(f"{app.url}/gradio_api/queue/join", cookies=ben, timeout=30, json={
        "data": [file], "fn_index": png_info, "session_hash": "bens-session"})
    assert used.status_code == 403  # nor may ben hand it to a handler


def test_the_api_saves_per_user_and_returns_no_paths(app: RunningApp) -> None:
    body = {"prompt": "ben through the api", "steps": 2, "width": 64, "height": 64, "seed": 5, "save_images": True,
            "override_settings": {"sd_model_checkpoint": MODEL}}
    answer = requests.post(f"{app.url}/sdapi/v1/txt2img", json=body, auth=("ben", USERS["ben"]), timeout=300)
    assert answer.ok, answer.text
    assert list((app.outputs_dir / "ben" / "txt2img-images").rglob("*-5.png"))
    assert str(app.outputs_dir) not in answer.text and ".png" not in json.dumps(answer.json()["info"])


# ----- a person in Chromium, logged in ----------------------------------------------------------------

@pytest.mark.slow
def test_the_whole_flow_in_a_browser_with_logins(app: RunningApp, tmp_path: Path) -> None:
    """amy logs in, generates, sends the result to img2img and inpaint, uploads a picture and paints a mask:
    every file her page asks for is served; ben's browser gets 403 for her gallery's picture."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    from app.bootstrap import CHROMIUM

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing")
    picture = tmp_path / "upload.png"
    Image.new("RGB", (64, 64), (200, 60, 30)).save(picture)
    refused: list[str] = []
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            amy, ben = (browser_login(browser, app, user) for user in USERS)
            amy.on("response", lambda r: refused.append(f"{r.status} {r.url}") if r.status in (401, 403) else None)
            amy.fill("#txt2img_prompt textarea", "amy's red circle")
            amy.click("#txt2img_generate")
            source = loaded_image(amy, "#txt2img_gallery img", 120_000)
            assert "/.gradio-cache/" in source
            assert amy.request.get(source).status == 200
            assert ben.request.get(source).status == 403

            amy.click("#txt2img_send_to_img2img")
            loaded_image(amy, "#img2img_image img")
            amy.click("#img2img_generate")
            first = loaded_image(amy, "#img2img_gallery img", 120_000)

            amy.get_by_role("tab", name="txt2img").click()
            amy.click("#txt2img_send_to_inpaint")
            amy.locator("#inpaint_editor canvas").first.wait_for(state="visible", timeout=20_000)
            with amy.expect_response(lambda answer: "/gradio_api/upload" in answer.url, timeout=60_000):
                amy.locator("#inpaint_editor input[type=file]").set_input_files(str(picture))
            amy.wait_for_timeout(1500)  # the editor draws the uploaded picture
            canvas = amy.locator("#inpaint_editor canvas").first.bounding_box()
            middle_x, middle_y = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2
            amy.mouse.move(middle_x - 40, middle_y)
            amy.mouse.down()
            for step in range(1, 11):
                amy.mouse.move(middle_x - 40 + 8 * step, middle_y)
            amy.mouse.up()
            amy.click("#inpaint_generate")
            loaded_image(amy, "#inpaint_gallery img", 120_000)

            amy.get_by_role("tab", name="img2img").click()
            amy.set_input_files("#img2img_image input[type=file]", str(picture))
            loaded_image(amy, "#img2img_image img")
            amy.click("#img2img_generate")
            amy.wait_for_function("(first) => document.querySelector('#img2img_gallery img')?.src !== first",
                                  arg=amy.evaluate("() => document.querySelector('#img2img_gallery img').src"),
                                  timeout=120_000)
            assert loaded_image(amy, "#img2img_gallery img") != first
        finally:
            browser.close()
    assert refused == []
    assert list((app.outputs_dir / "amy" / "txt2img-images").rglob("*.png"))
    assert len(list((app.outputs_dir / "amy" / "img2img-images").rglob("*.png"))) >= 2
    assert list((app.outputs_dir / "amy" / "inpaint-images").rglob("*.png"))


def browser_login(browser, app: RunningApp, user: str):
    """A page of a fresh browser context, logged in as ``user`` through the login form."""
    import re

    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(app.url)
    page.get_by_label(re.compile("username", re.I)).fill(user)
    page.get_by_label(re.compile("password", re.I)).fill(USERS[user])
    page.get_by_role("button", name=re.compile("login", re.I)).click()
    page.wait_for_selector("#txt2img_generate", timeout=60_000)
    return page


def loaded_image(page, selector: str, timeout: float = 20_000) -> str:
    """The source of the first image at ``selector`` once the browser has drawn it (it was served)."""
    page.wait_for_function("(sel) => { const img = document.querySelector(sel); "
                           "return !!img && img.complete && img.naturalWidth > 0; }", arg=selector, timeout=timeout)
    return page.locator(selector).first.get_attribute("src")
