"""How the web UI is served: bind address, logins, TLS files, upload limit, and which files may be fetched.

Gradio serves any file under its upload/cache folder. That folder is moved under ``outputs/``
(``outputs/.gradio-cache``), ``outputs/`` is the one allowed folder and ``models/`` is blocked, so
a browser can fetch generated images and its own uploads, never weights or other files on disk.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from app.engine.outputs import user_folders

log = logging.getLogger(__name__)

CACHE_FOLDER_NAME = ".gradio-cache"
LOCALHOST = "127.0.0.1"


class CredentialsError(ValueError):
    """A malformed ``--auth`` value or auth file."""


class TlsError(ValueError):
    """A missing, unreadable or unusable ``--tls-certfile`` / ``--tls-keyfile``."""


@dataclass(frozen=True)
class ServeOptions:
    """What launch.py's network flags ask for."""

    host: str = LOCALHOST
    port: int = 7860
    credentials: tuple[tuple[str, str], ...] = ()
    share: bool = False
    max_upload_mb: int = 50
    extra_blocked: tuple[Path, ...] = field(default_factory=tuple)
    allowed_hosts: tuple[str, ...] = ()  # more Host names to answer to (--allowed-hosts), beside the listen address's
    tls_certfile: Path | None = None  # with tls_keyfile: serve https (uvicorn's ssl_certfile/ssl_keyfile)
    tls_keyfile: Path | None = None

    def __post_init__(self) -> None:
        """Each user gets a folder under outputs/: a name that cannot be one is refused before anything starts."""
        _ = self.user_folders

    @property
    def user_folders(self) -> dict[str, str]:
        """Each login's folder name under outputs/ (``app.engine.outputs.user_folder``); CredentialsError for
        a user name that cannot name a folder, or two that differ only in case."""
        try:
            return user_folders(user for user, _ in self.credentials)
        except ValueError as exc:
            raise CredentialsError(str(exc)) from None

    @property
    def listens_beyond_this_machine(self) -> bool:
        return self.host not in (LOCALHOST, "localhost", "::1")

    @property
    def tls(self) -> bool:
        return self.tls_certfile is not None and self.tls_keyfile is not None


def parse_credentials(text: str) -> tuple[tuple[str, str], ...]:
    """``user:pass[,user2:pass2]`` (also one pair per line) as (user, password) pairs.

    The password is everything after the first colon, so it may itself contain colons.
    """
    pairs: list[tuple[str, str]] = []
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user.strip() or not password:
            raise CredentialsError(f"Credentials must look like user:password, got {item.split(':')[0]!r}:…")
        pairs.append((user.strip(), password))
    if not pairs:
        raise CredentialsError("No credentials given: use user:password[,user2:password2].")
    return tuple(pairs)


def read_credentials_file(path: Path) -> tuple[tuple[str, str], ...]:
    """An auth file: the same pairs as ``--auth``, separated by commas or new lines; # starts a comment."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CredentialsError(f"Cannot read the auth file {path}: {exc.strerror or exc}") from exc
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return parse_credentials("\n".join(lines))


def check_tls_files(certfile: Path, keyfile: Path) -> tuple[Path, Path]:
    """The certificate and key as absolute paths, once both are readable and make a pair.

    Loading them here turns a wrong file into a clear message before anything starts, instead of
    uvicorn's traceback. A key with a password is refused (uvicorn would otherwise ask for it on the
    terminal): use an unencrypted PEM key that only the operator's account can read.
    """
    paths = (Path(certfile).expanduser().resolve(), Path(keyfile).expanduser().resolve())
    for flag, path in zip(("--tls-certfile", "--tls-keyfile"), paths):
        try:
            with path.open("rb") as file:
                file.read(1)
        except OSError as exc:
            raise TlsError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from exc
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(*paths, password=_no_key_password)
    except (ssl.SSLError, _EncryptedKey) as exc:
        raise TlsError(f"--tls-certfile/--tls-keyfile: cannot use {paths[0].name} with {paths[1].name} ({_tls_reason(exc)}). "
                       "Give a PEM certificate and its PEM private key, without a password.") from exc
    return paths


class _EncryptedKey(Exception):
    pass


def _tls_reason(exc: Exception) -> str:
    if isinstance(exc, _EncryptedKey):
        return "the key is encrypted"
    reason = getattr(exc, "reason", None)
    if reason == "KEY_VALUES_MISMATCH":
        return "the key does not belong to the certificate"
    return reason or "not a PEM certificate and a PEM key"


def _no_key_password() -> bytes:
    raise _EncryptedKey()


def use_cache_under(outputs_dir: Path) -> Path:
    """Point Gradio's upload/cache folder into ``outputs_dir`` (before any Blocks is built)."""
    cache = (Path(outputs_dir) / CACHE_FOLDER_NAME).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(cache / "examples")
    return cache


def launch_kwargs(options: ServeOptions, outputs_dir: Path, models_dir: Path) -> dict[str, object]:
    """Keyword arguments of ``Blocks.launch`` for these options."""
    blocked = [str(Path(models_dir).resolve()), *(str(Path(p).resolve()) for p in options.extra_blocked)]
    return dict(
        server_name=options.host,
        server_port=options.port,
        auth=list(options.credentials) or None,
        auth_message="LoRA Studio: sign in with the user name and password the operator gave you.",
        share=options.share,
        max_file_size=f"{options.max_upload_mb}mb",
        allowed_paths=[str(Path(outputs_dir).resolve())],
        blocked_paths=blocked,
        footer_links=["api"],
    )


def warn_if_open(options: ServeOptions) -> str | None:
    """The start-up warning for a UI reachable from the network without a login, or with logins but
    without TLS; or None."""
    if options.listens_beyond_this_machine and not options.credentials:
        message = ("WARNING: --listen without --auth: anyone on your network can open LoRA Studio, run jobs "
                   "and see the images in outputs/. Add --auth user:password or --auth-file FILE.")
        log.warning(message)
        return message
    if options.share and not options.credentials:
        message = "WARNING: --share without --auth: anyone with the public link can use LoRA Studio."
        log.warning(message)
        return message
    if options.listens_beyond_this_machine and not options.tls:
        message = ("WARNING: --listen without TLS: passwords and images travel unencrypted on your network. "
                   "Add --tls-certfile FILE --tls-keyfile FILE (or serve it behind an https proxy).")
        log.warning(message)
        return message
    return None
