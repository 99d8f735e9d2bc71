"""Command-line options of launch.py and the start-up sequence: flags -> config -> Engine -> UI."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("lora_studio")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# app.engine.config's COMPILE_MODES and RNG_SOURCES, spelled out: --help must work before torch is installed
COMPILE_MODE_CHOICES = ["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
RNG_CHOICES = ["cpu", "gpu"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch.py",
        description="LoRA Studio: a local Stable Diffusion workbench. Opens a web UI on this machine.",
    )
    parser.add_argument("--listen", action="store_true",
                        help="listen on all network interfaces (0.0.0.0) so others on the LAN can connect; "
                             "the default is 127.0.0.1, this machine only")
    parser.add_argument("--port", type=int, default=7860, help="port of the web UI (default 7860)")
    parser.add_argument("--auth", metavar="USER:PASS[,USER2:PASS2]", default=None,
                        help="require a login: one or more user:password pairs, separated by commas")
    parser.add_argument("--auth-file", metavar="FILE", type=Path, default=None,
                        help="require a login with the user:password pairs in FILE (comma- or line-separated, "
                             "# comments allowed); keeps passwords out of the shell history")
    parser.add_argument("--allowed-hosts", metavar="NAME[,NAME2]", default="",
                        help="more host names or addresses browsers may use to reach the server (a DNS name or "
                             "reverse proxy name); it answers only to localhost and its own names and addresses")
    parser.add_argument("--share", action="store_true",
                        help="also open a public gradio.live link through Gradio's tunnel. Needs internet; "
                             "off by default. Use it with --auth")
    parser.add_argument("--tls-certfile", metavar="FILE", type=Path, default=None,
                        help="serve https with this PEM certificate (with --tls-keyfile); use it with --listen "
                             "and --auth so passwords and images are encrypted on the network")
    parser.add_argument("--tls-keyfile", metavar="FILE", type=Path, default=None,
                        help="the PEM private key of --tls-certfile (without a password)")
    parser.add_argument("--max-upload-mb", type=int, default=50,
                        help="largest file a browser may upload, in MB (default 50)")
    parser.add_argument("--models-dir", type=Path, default=PROJECT_ROOT / "models",
                        help="folder with Stable-diffusion/, Lora/ and VAE/ subfolders (default: models/ "
                             "beside launch.py; an A1111 models folder works as it is)")
    parser.add_argument("--dataset-roots", metavar="DIR[,DIR]", default="",
                        help="folders the Train tab may read datasets from (their subfolders too), separated by "
                             "commas. Default: datasets/ beside the models folder. Uploads, copied to "
                             "outputs/training/datasets, are always allowed")
    parser.add_argument("--outputs-dir", type=Path, default=PROJECT_ROOT / "outputs",
                        help="where generated images are saved (default: outputs/ beside launch.py)")
    parser.add_argument("--model", default=None,
                        help="default checkpoint: a name from models/Stable-diffusion, a path to a diffusers "
                             "folder or .safetensors file, or a Hugging Face hub id (needs internet). "
                             "Default: the bundled model")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                        help="where models run: auto picks CUDA, then Apple MPS, then the CPU")
    parser.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                        help="weight precision: auto is fp16 on a GPU and fp32 on the CPU")
    parser.add_argument("--attention", choices=["sdpa", "xformers"], default="sdpa",
                        help="attention kernels: PyTorch SDPA (default) or xformers (CUDA only, "
                             "needs the 'xformers' extra installed)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the UNet and VAE decoder: faster sampling on a GPU after a compile of "
                             "each new size (batches padded to 1, 2, 4, 8...); LoRA swaps do not recompile")
    parser.add_argument("--compile-mode", choices=COMPILE_MODE_CHOICES, default="reduce-overhead",
                        help="torch.compile mode with --compile (default reduce-overhead: CUDA graphs)")
    parser.add_argument("--channels-last", action="store_true",
                        help="UNet and VAE in channels_last memory format (faster convolutions on most GPUs)")
    parser.add_argument("--fuse-qkv", action="store_true",
                        help="fuse each attention's query/key/value projections into one matrix product "
                             "(diffusers' own; LoRAs still apply)")
    parser.add_argument("--max-models", type=int, default=1,
                        help="how many checkpoints stay loaded at once (default 1)")
    parser.add_argument("--lora-cache-mb", type=int, default=1024,
                        help="LoRA files kept in memory, in MB, so switching back to one reads no disk (default 1024)")
    parser.add_argument("--max-loras", type=int, default=8,
                        help="LoRA adapters kept loaded on a model, least recently used removed first (default 8)")
    parser.add_argument("--max-queue-per-user", type=_at_least_one, default=20, metavar="N",
                        help="jobs one user (a browser session or an API login) may have queued or running; the "
                             "next is refused until one ends, so one script cannot fill the queue (default 20)")
    parser.add_argument("--max-queue", type=_at_least_one, default=200, metavar="N",
                        help="jobs waiting for the GPU, all users together; the next is refused. Each waiting job "
                             "holds its request (input images too) in memory, and with many users the per-user "
                             "limit alone does not bound that (default 200)")
    parser.add_argument("--batch-requests", type=_at_least_one, default=1, metavar="N",
                        help="draw up to N queued txt2img jobs (of any users) as one batch when they share model, "
                             "VAE, size, sampler, steps, CFG, clip skip and LoRAs and use no hires fix, tiling, "
                             "face restoration, batch count or prompt editing; each keeps its seed, prompt, "
                             "progress, cancel and files. Faster on a GPU when several people queue; not with "
                             "--ray (default 1: each job alone)")
    parser.add_argument("--rng", choices=RNG_CHOICES, default="cpu",
                        help="where the noise is drawn (A1111's \"Random number generator source\"): cpu gives "
                             "the same picture for a seed on any machine; gpu draws it on the GPU, as A1111 does by "
                             "default, without copying noise to the GPU at each step (default cpu)")
    parser.add_argument("--no-api", action="store_true",
                        help="do not serve A1111's REST API (/sdapi/v1); it is on by default, on the UI's port")
    parser.add_argument("--insecure-open-api", action="store_true",
                        help="allow --listen with the API and no --auth: anyone on the network could then run "
                             "jobs and read settings through the API without a password")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow .ckpt/.pt checkpoints (pickle files can run code; they are loaded with "
                             "weights_only=True). Off by default: prefer .safetensors")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="run generation on a Ray cluster (needs the 'cluster' extra): 'auto' for the cluster "
                             "'ray start --head' started on this machine, ray://host:10001 for one elsewhere, or "
                             "'local' for a one-machine instance of its own. One worker per GPU; "
                             "the queue, logins and outputs stay here. Every machine needs the models folder at the "
                             "same path")
    parser.add_argument("--ray-replicas", type=_at_least_one, default=None, metavar="N",
                        help="with --ray: how many generation workers (default: one per GPU of the cluster, or 1 "
                             "on a cluster without GPUs)")
    parser.add_argument("--ray-cpus-per-replica", type=float, default=1.0, metavar="N",
                        help="with --ray on a cluster without GPUs: the CPUs each worker takes (default 1)")
    return parser


def engine_config_from_args(args: argparse.Namespace):
    """Turn parsed flags into an EngineConfig; without --model, the bundled demo model."""
    from app.engine.config import EngineConfig
    from app.engine.registry import CHECKPOINT_DIR, EMBEDDINGS_DIR, LORA_DIR, VAE_DIR

    for folder in (CHECKPOINT_DIR, LORA_DIR, VAE_DIR, EMBEDDINGS_DIR):  # A1111's layout, ready for the user's files
        (args.models_dir / folder).mkdir(parents=True, exist_ok=True)
    extra: tuple[Path, ...] = ()
    model = args.model
    if model and Path(model).exists():  # a path given by the operator: register it by its file name
        extra = (Path(model).resolve(),)
        model = Path(model).name
    if model is None:
        model, extra = start_model(args.models_dir)
    return EngineConfig(
        models_dir=args.models_dir, outputs_dir=args.outputs_dir, default_model=model,
        device=args.device, dtype=args.dtype, attention=args.attention,
        max_resident_models=args.max_models, allow_pickle=args.allow_pickle, extra_checkpoints=extra,
        lora_cache_mb=args.lora_cache_mb, max_loaded_loras=args.max_loras,
        max_queue_per_user=args.max_queue_per_user, max_queue=args.max_queue, batch_requests=args.batch_requests,
        compile=args.compile, compile_mode=args.compile_mode, channels_last=args.channels_last,
        fuse_qkv=args.fuse_qkv, rng=args.rng,
    )


def _at_least_one(text: str) -> int:
    """argparse type of a count that must be 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def start_model(models_dir: Path) -> tuple[str, tuple[Path, ...]]:
    """The model the app opens on when none is named: the bundled demo model (committed under this
    repository's models/, also offered when --models-dir points elsewhere), else the placeholder."""
    from app.demo import DEMO_MODEL, bundled_demo_model
    from app.engine.placeholder import ensure_placeholder_model
    from app.engine.registry import CHECKPOINT_DIR

    if (models_dir / CHECKPOINT_DIR / DEMO_MODEL / "model_index.json").is_file():
        return DEMO_MODEL, ()
    bundled = bundled_demo_model()
    if bundled is not None:
        return DEMO_MODEL, (bundled,)
    return ensure_placeholder_model(models_dir), ()


def serve_options_from_args(args: argparse.Namespace):
    """Network options from the flags; a bad --auth value or file raises CredentialsError."""
    from app.serving import LOCALHOST, ServeOptions, parse_credentials, read_credentials_file
    from app.web_guard import allowed_host_entry

    credentials: tuple[tuple[str, str], ...] = ()
    if args.auth:
        credentials += parse_credentials(args.auth)
    if args.auth_file:
        credentials += read_credentials_file(args.auth_file)
    if args.max_upload_mb < 1:
        raise ValueError("--max-upload-mb must be at least 1")
    allowed = tuple(allowed_host_entry(name) for name in args.allowed_hosts.split(",") if name.strip())
    certfile, keyfile = tls_files_from_args(args)
    return ServeOptions(host="0.0.0.0" if args.listen else LOCALHOST, port=args.port, credentials=credentials,
                        share=args.share, max_upload_mb=args.max_upload_mb, allowed_hosts=allowed,
                        tls_certfile=certfile, tls_keyfile=keyfile)


def tls_files_from_args(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """--tls-certfile and --tls-keyfile, both or neither, checked (TlsError, a ValueError, if unusable)."""
    from app.serving import TlsError, check_tls_files

    if args.tls_certfile is None and args.tls_keyfile is None:
        return None, None
    if args.tls_certfile is None or args.tls_keyfile is None:
        given, missing = ("--tls-keyfile", "--tls-certfile") if args.tls_certfile is None \
            else ("--tls-certfile", "--tls-keyfile")
        raise TlsError(f"{given} needs {missing} too: give the certificate and its key together")
    if args.share:
        raise TlsError("--share cannot carry --tls-certfile/--tls-keyfile: Gradio's tunnel forwards plain http "
                       "to this server (its public link is https already). Use --share or TLS, not both.")
    return check_tls_files(args.tls_certfile, args.tls_keyfile)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        options = serve_options_from_args(args)
        dataset_roots = dataset_roots_from_args(args)
    except ValueError as exc:  # CredentialsError included
        parser.error(str(exc))
    if args.ray:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            parser.error("--ray needs Ray: install the cluster extra with  pip install -e .[cluster]")
    if not args.no_api and options.listens_beyond_this_machine and not options.credentials \
            and not args.insecure_open_api:
        parser.error("--listen serves the REST API (/sdapi/v1) to your whole network, and without --auth anyone "
                     "there could run jobs and change its options. Add --auth user:password (API clients then "
                     "send it as HTTP Basic), or --no-api, or --insecure-open-api if that is really wanted.")
    from app.serving import use_cache_under, warn_if_open

    use_cache_under(args.outputs_dir)  # before Gradio builds anything
    from dataclasses import replace

    from app.audit import audit_files, setup_audit_log

    audit_file = setup_audit_log(args.outputs_dir).baseFilename  # jobs, logins: who did what, when (no prompts)
    log.info("audit log: %s", audit_file)
    # outputs/ is served to browsers (the gallery's images), the audit log in it is not
    options = replace(options, extra_blocked=(*options.extra_blocked, *audit_files(args.outputs_dir)))
    from app.engine import Engine
    from app.server import serve

    config = engine_config_from_args(args)
    remote = None
    if args.ray:  # only here is Ray imported
        from app.cluster.connect import start_cluster

        remote = start_cluster(args, config)
    engine = Engine(config, remote)
    log.info("device %s, dtype %s, default model %s", config.resolved_device(), config.resolved_dtype(),
             config.default_model)
    warn_if_open(options)
    log.info("the Train tab reads dataset folders only inside: %s", dataset_roots.describe())
    serve(engine, training_service(engine, dataset_roots), options,
          None if args.no_api else api_context(engine, options, args))


def training_service(engine, dataset_roots=None):
    """Training and evaluation jobs on the engine's worker, with the demo model's checker as a scorer.
    Dataset folders are limited to ``dataset_roots`` (a DatasetRoots; default: the default roots)."""
    from app.demo import register_scorers
    from app.training.evaluate import Scorers
    from app.training.job import Training
    from app.training.roots import DatasetRoots

    scorers = Scorers()
    register_scorers(scorers)
    roots = dataset_roots or DatasetRoots.for_server(engine.config.models_dir, engine.config.outputs_dir)
    return Training(engine, scorers, roots)


def dataset_roots_from_args(args: argparse.Namespace):
    """The DatasetRoots of --dataset-roots (ValueError for a folder that does not exist)."""
    from app.training.roots import DatasetRoots, parse_roots

    extra = parse_roots(args.dataset_roots)
    missing = [str(folder) for folder in extra if not folder.is_dir()]
    if missing:
        raise ValueError(f"--dataset-roots: not a folder: {', '.join(missing)}")
    return DatasetRoots.for_server(args.models_dir, args.outputs_dir, extra)


def api_context(engine, options, args: argparse.Namespace):
    """The REST API's context: its options file under outputs/, the logins, the flags it reports."""
    from app.api.context import ApiContext
    from app.api.options import OPTIONS_FILE, OptionsStore, default_options

    store = OptionsStore(args.outputs_dir / OPTIONS_FILE, default_options(engine.config.default_model))
    flags = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()
             if key not in ("auth", "auth_file")}
    return ApiContext(engine, store, options.credentials, flags)
