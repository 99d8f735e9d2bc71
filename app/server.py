"""One web server for the UI and the REST API: FastAPI with the Gradio UI mounted at /.

The API's routes (``/sdapi/v1``, the OpenAPI page at ``/docs``) are added first, so they win over
the UI's paths; the UI keeps its own login, upload limit and file rules (``app.serving``). With
``--share`` the UI goes through Gradio's own launcher and tunnel, which cannot carry the API (nor the
browser guards of ``app.web_guard``, which the one server puts in front of everything else). With
``--tls-certfile``/``--tls-keyfile`` uvicorn serves https; the tunnel cannot, so app.cli refuses them with
``--share``. Logins of the UI and the API are throttled per client address (``app.login_throttle``). With
logins, each user's pictures are saved under ``outputs/<user>/`` and the file routes serve a user only their
own files and uploads (``app.file_access``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr
import uvicorn
from fastapi import FastAPI
from starlette.routing import Mount

from app.api import add_api
from app.api.context import ApiContext
from app.engine import Engine
from app.file_access import FileAccess, FileRules, gradio_user
from app.login_throttle import LoginThrottle, ThrottledLogin
from app.serving import ServeOptions, launch_kwargs
from app.training.job import Training
from app.ui import CSS, HEAD, build_ui
from app.web_guard import LoginRedirect, WebGuard, allowed_hosts

log = logging.getLogger(__name__)


def build_app(engine: Engine, training: Training, options: ServeOptions, api: ApiContext | None) -> FastAPI:
    """The ASGI app: the API (when ``api`` is given) and the UI. Failed logins of both count in one
    ``LoginThrottle``, the API context's."""
    app = FastAPI(title="LoRA Studio", description="A1111-compatible API (/sdapi/v1) and the web UI.",
                  docs_url="/docs" if api else None, redoc_url=None, openapi_url="/openapi.json" if api else None)
    if api is not None:
        add_api(app, api)
    blocks = build_ui(engine, training)
    blocks.queue(default_concurrency_limit=None)
    kwargs = launch_kwargs(options, engine.config.outputs_dir, engine.config.models_dir)
    for launcher_only in ("server_name", "server_port", "share"):
        kwargs.pop(launcher_only)
    gr.mount_gradio_app(app, blocks, path="/", css=CSS, head=HEAD, **kwargs)  # type: ignore[arg-type]
    if options.credentials:
        ui = next(route.app for route in app.routes if isinstance(route, Mount) and isinstance(route.app, gr.routes.App))
        # innermost: each user's files and uploads are theirs (outputs/<user>/ and what Gradio handed them)
        rules = FileRules(engine.config.outputs_dir, Path(ui.uploaded_file_dir), options.user_folders)
        user_of = gradio_user(ui)
        app.add_middleware(FileAccess, rules=rules, user_of=user_of)  # type: ignore[arg-type]
        app.add_middleware(LoginRedirect, logged_in=lambda scope: user_of(scope) is not None)  # type: ignore[arg-type]
        throttle = api.throttle if api is not None else LoginThrottle()
        app.add_middleware(ThrottledLogin, throttle=throttle)  # type: ignore[arg-type]
    # added last, so it runs first: a refused Host or Origin reaches no handler, API or UI
    app.add_middleware(WebGuard, allowed_hosts=allowed_hosts(options.host, options.allowed_hosts))  # type: ignore[arg-type]
    return app


def serve(engine: Engine, training: Training, options: ServeOptions, api: ApiContext | None) -> None:
    """Serve until interrupted."""
    if options.share:
        if api is not None:
            log.warning("--share: the REST API is not served through Gradio's tunnel; only the UI is")
        blocks = build_ui(engine, training)
        blocks.queue(default_concurrency_limit=None)
        blocks.launch(css=CSS, head=HEAD, **launch_kwargs(options, engine.config.outputs_dir,  # type: ignore[arg-type]
                                                          engine.config.models_dir))
        return
    app = build_app(engine, training, options, api)
    shown = "127.0.0.1" if options.host == "0.0.0.0" else options.host
    scheme = "https" if options.tls else "http"
    log.info("LoRA Studio on %s://%s:%d/%s", scheme, shown, options.port,
             " (A1111 API: /sdapi/v1, its docs: /docs)" if api else "")
    print(f"Running on local URL:  {scheme}://{shown}:{options.port}", flush=True)
    tls = {"ssl_certfile": str(options.tls_certfile), "ssl_keyfile": str(options.tls_keyfile)} if options.tls else {}
    uvicorn.run(app, host=options.host, port=options.port, log_level="warning", timeout_graceful_shutdown=5, **tls)
