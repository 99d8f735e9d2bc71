"""Sampler names, schedule types and the diffusers schedulers built for them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from app.engine.requests import Txt2ImgRequest
from app.engine.samplers import (
    SAMPLER_NAMES,
    SCHEDULE_TYPES,
    SeededDPMSolverSDEScheduler,
    automatic_schedule_type,
    infotext_schedule_type,
    make_scheduler,
    resolve_sampler,
    scheduler_overrides,
    supported_schedule_types,
)
from app.engine.tiny import SD_SCHEDULER, build_tiny_pipeline

ALL = ("Automatic", "Uniform", "Karras", "Exponential", "SGM Uniform", "Beta")
SPACING_ONLY = ("Automatic", "Uniform", "SGM Uniform")
OWN = ("Automatic",)
DPM = {"solver_order": 2, "final_sigmas_type": "zero"}

# sampler -> (class, flags every schedule type keeps, schedule types it supports, what Automatic runs)
EXPECTED: dict[str, tuple[type, dict[str, object], tuple[str, ...], str]] = {
    "DPM++ 2M": (
        DPMSolverMultistepScheduler,
        {**DPM, "algorithm_type": "dpmsolver++", "solver_type": "midpoint"},
        ALL,
        "Karras",
    ),
    "DPM++ SDE": (SeededDPMSolverSDEScheduler, {"noise_sampler_seed": None}, ALL, "Karras"),
    "DPM++ 2M SDE": (
        DPMSolverMultistepScheduler,
        {**DPM, "algorithm_type": "sde-dpmsolver++", "solver_type": "midpoint"},
        ALL,
        "Exponential",
    ),
    "DPM++ 2M SDE Heun": (
        DPMSolverMultistepScheduler,
        {**DPM, "algorithm_type": "sde-dpmsolver++", "solver_type": "heun"},
        ALL,
        "Exponential",
    ),
    "Euler a": (EulerAncestralDiscreteScheduler, {}, SPACING_ONLY, "Uniform"),
    "Euler": (EulerDiscreteScheduler, {}, ALL, "Uniform"),
    "LMS": (LMSDiscreteScheduler, {}, ALL, "Uniform"),
    "Heun": (HeunDiscreteScheduler, {"clip_sample": False}, ALL, "Uniform"),
    "DPM2": (KDPM2DiscreteScheduler, {}, ALL, "Karras"),
    "DPM2 a": (KDPM2AncestralDiscreteScheduler, {}, ALL, "Karras"),
    "DDIM": (
        DDIMScheduler,
        {"clip_sample": False, "set_alpha_to_one": False, "timestep_spacing": "leading", "steps_offset": 1},
        OWN,
        "own",
    ),
    "PLMS": (
        PNDMScheduler,
        {"skip_prk_steps": True, "set_alpha_to_one": False, "timestep_spacing": "leading", "steps_offset": 1},
        OWN,
        "own",
    ),
    "UniPC": (
        UniPCMultistepScheduler,
        {"solver_type": "bh1", "solver_order": 3, "lower_order_final": True, "timestep_spacing": "linspace"},
        OWN,
        "own",
    ),
    "LCM": (LCMScheduler, {"original_inference_steps": 50, "timestep_spacing": "leading", "steps_offset": 1}, OWN,
            "own"),
    "DEIS": (DEISMultistepScheduler, {"solver_order": 3}, ALL, "Uniform"),
}

_OFF = {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}
SCHEDULE_FLAGS: dict[str, dict[str, object]] = {
    "Uniform": {**_OFF, "timestep_spacing": "linspace"},
    "Karras": {**_OFF, "timestep_spacing": "linspace", "use_karras_sigmas": True},
    "Exponential": {**_OFF, "timestep_spacing": "linspace", "use_exponential_sigmas": True},
    "SGM Uniform": {**_OFF, "timestep_spacing": "trailing"},
    "Beta": {**_OFF, "timestep_spacing": "linspace", "use_beta_sigmas": True},
}


def sd_config(**changes: object) -> dict:
    """An SD 1.x-style scheduler config, as a model ships it."""
    return dict(EulerDiscreteScheduler(**{**SD_SCHEDULER, **changes}).config)


def test_names_are_a1111_names() -> None:
    assert set(SAMPLER_NAMES) == set(EXPECTED)
    # A1111's dropdown order, LoRA Studio's DEIS last.
    assert SAMPLER_NAMES == ("DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "Euler a", "Euler",
                             "LMS", "Heun", "DPM2", "DPM2 a", "DDIM", "PLMS", "UniPC", "LCM", "DEIS")
    assert len(set(SAMPLER_NAMES)) == len(SAMPLER_NAMES)
    assert SCHEDULE_TYPES == ALL
    for name in SAMPLER_NAMES:
        assert resolve_sampler(name) == (name, "Automatic")
        assert supported_schedule_types(name) == EXPECTED[name][2]


@pytest.mark.parametrize("schedule", SCHEDULE_TYPES)
@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_combination_builds_or_raises(sampler: str, schedule: str) -> None:
    cls, fixed, supported, automatic = EXPECTED[sampler]
    config = sd_config()
    if schedule not in supported:
        with pytest.raises(ValueError, match="cannot use schedule type"):
            resolve_sampler(sampler, schedule)
        with pytest.raises(ValueError, match="cannot use schedule type"):
            make_scheduler(config, sampler, schedule)
        return
    scheduler = make_scheduler(config, sampler, schedule)
    assert type(scheduler) is cls
    for key, value in fixed.items():
        assert scheduler.config[key] == value, key
    effective = automatic if schedule == "Automatic" else schedule
    for key, value in SCHEDULE_FLAGS.get(effective, {}).items():
        if key in scheduler.config:
            assert scheduler.config[key] == value, key
        elif value is True:
            pytest.fail(f"{cls.__name__} has no {key} for {effective}")
    # The model's own settings carry over.
    assert scheduler.config.num_train_timesteps == 1000
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert scheduler.config.beta_end == pytest.approx(0.012)
    assert scheduler.config.get("clip_sample", False) is False
    scheduler.set_timesteps(12)
    assert len(scheduler.timesteps) >= 12


def test_automatic_follows_a1111_defaults() -> None:
    assert automatic_schedule_type("DPM++ 2M") == "Karras"
    assert automatic_schedule_type("DPM++ 2M SDE") == "Exponential"
    assert automatic_schedule_type("DPM++ 2M SDE Heun") == "Exponential"
    assert automatic_schedule_type("DPM2") == automatic_schedule_type("DPM2 a") == "Karras"
    assert automatic_schedule_type("DPM++ SDE") == automatic_schedule_type("DPM++ SDE Karras") == "Karras"
    assert automatic_schedule_type("DPM++ 2S a") == "Karras"  # known to A1111, not offered here
    for name in ("Euler a", "Euler", "LMS", "Heun", "DDIM", "PLMS", "UniPC", "DEIS"):
        assert automatic_schedule_type(name) is None
    assert make_scheduler(sd_config(), "DPM++ SDE").config.use_karras_sigmas is True
    lms = make_scheduler(sd_config(), "LMS").config
    assert (lms.use_karras_sigmas, lms.use_exponential_sigmas, lms.use_beta_sigmas) == (False, False, False)
    assert lms.timestep_spacing == "linspace"
    assert make_scheduler(sd_config(), "DPM++ 2M").config.use_karras_sigmas is True
    assert make_scheduler(sd_config(), "DPM++ 2M SDE").config.use_exponential_sigmas is True
    # What A1111 1.9+ writes as "Schedule type".
    assert infotext_schedule_type("DPM++ 2M") == "Karras"
    assert infotext_schedule_type("DPM++ 2M", "Uniform") == "Uniform"
    assert infotext_schedule_type("DPM++ 2M SDE", "Automatic") == "Exponential"
    assert infotext_schedule_type("Euler a") == "Automatic"
    assert infotext_schedule_type("Euler", "Karras") == "Karras"
    assert infotext_schedule_type("DDIM") == "Automatic"
    assert infotext_schedule_type("DPM++ 2M Karras") == "Karras"
    assert infotext_schedule_type("DPM++ SDE") == "Karras"
    assert infotext_schedule_type("LMS") == "Automatic"
    assert infotext_schedule_type("LMS", "Beta") == "Beta"


def test_karras_and_uniform_span_the_full_sigma_range() -> None:
    """Like A1111: from the model's sigma_max (t=999) down to its sigma_min (t=0), then 0."""
    alphas = DDPMScheduler(**{k: v for k, v in SD_SCHEDULER.items() if k != "timestep_spacing"}).alphas_cumprod
    sigmas = ((1 - alphas) / alphas) ** 0.5
    for sampler, schedule in (("Euler", "Karras"), ("Euler", "Uniform"), ("DPM++ 2M", "Automatic"), ("Euler", "Exponential")):
        scheduler = make_scheduler(sd_config(), sampler, schedule)
        scheduler.set_timesteps(20)
        assert float(scheduler.sigmas[0]) == pytest.approx(float(sigmas[-1]), rel=1e-4), (sampler, schedule)
        assert float(scheduler.sigmas[-1]) == 0.0
        assert float(scheduler.sigmas[-2]) == pytest.approx(float(sigmas[0]), rel=1e-3), (sampler, schedule)
    euler = make_scheduler(sd_config(), "Euler")
    euler.set_timesteps(20)
    assert int(euler.timesteps[0]) == 999 and int(euler.timesteps[-1]) == 0


def test_beta_is_a1111s_beta_schedule() -> None:
    """A1111 1.9+ "Beta": sigma_min + ppf(1 - linspace(0, 1, n); 0.6, 0.6) * (sigma_max - sigma_min), then 0."""
    scipy_stats = pytest.importorskip("scipy.stats")
    offered = [name for name in SAMPLER_NAMES if "Beta" in supported_schedule_types(name)]
    assert offered == [name for name in SAMPLER_NAMES if name not in ("Euler a", "DDIM", "PLMS", "UniPC", "LCM")]
    for name in offered:
        assert make_scheduler(sd_config(), name, "Beta").config.use_beta_sigmas is True, name
        assert make_scheduler(sd_config(), name, "Karras").config.use_beta_sigmas is False, name
    alphas = DDPMScheduler(**{k: v for k, v in SD_SCHEDULER.items() if k != "timestep_spacing"}).alphas_cumprod
    full = ((1 - alphas) / alphas) ** 0.5
    low, high = float(full[0]), float(full[-1])
    steps = 10
    expected = [low + scipy_stats.beta.ppf(x, 0.6, 0.6) * (high - low) for x in 1 - np.linspace(0, 1, steps)] + [0.0]
    for name in ("Euler", "LMS", "DPM++ 2M"):
        scheduler = make_scheduler(sd_config(), name, "Beta")
        scheduler.set_timesteps(steps)
        assert scheduler.sigmas.double().numpy() == pytest.approx(expected, rel=1e-4, abs=1e-6), name


def test_ddim_and_plms_step_like_a1111() -> None:
    """A1111: timesteps range(0, 1000, 1000 // steps) + 1, highest first."""
    for sampler in ("DDIM", "PLMS"):
        scheduler = make_scheduler(sd_config(timestep_spacing="trailing", steps_offset=0), sampler, "Automatic")
        scheduler.set_timesteps(20)
        assert sorted(set(int(t) for t in scheduler.timesteps)) == [t + 1 for t in range(0, 1000, 50)]


@pytest.mark.parametrize(
    ("name", "schedule", "expected"),
    [
        ("DPM++ 2M Karras", "Automatic", ("DPM++ 2M", "Karras")),
        ("DPM++ 2M Karras", "Karras", ("DPM++ 2M", "Karras")),
        ("dpm++ 2m  karras", "automatic", ("DPM++ 2M", "Karras")),
        ("DPM++ 2M SDE Exponential", "Automatic", ("DPM++ 2M SDE", "Exponential")),
        ("DPM++ 2M SDE Karras", "Automatic", ("DPM++ 2M SDE", "Karras")),
        ("DPM++ 2M SDE Heun Karras", "Automatic", ("DPM++ 2M SDE Heun", "Karras")),
        ("DPM++ 2M SDE Heun Exponential", "", ("DPM++ 2M SDE Heun", "Exponential")),
        ("DPM2 Karras", "Automatic", ("DPM2", "Karras")),
        ("DPM2 a Karras", "Automatic", ("DPM2 a", "Karras")),
        ("Euler a", "Automatic", ("Euler a", "Automatic")),
        ("euler A", "sgm_uniform", ("Euler a", "SGM Uniform")),
        ("Euler SGM Uniform", "Automatic", ("Euler", "SGM Uniform")),
        ("k_dpmpp_2m_ka", "Automatic", ("DPM++ 2M", "Karras")),
        ("k_euler_a", "Automatic", ("Euler a", "Automatic")),
        ("DPM++ 2M", "karras", ("DPM++ 2M", "Karras")),
        ("DPM++ 2M Automatic", "Karras", ("DPM++ 2M", "Karras")),
        ("LMS", "Automatic", ("LMS", "Automatic")),
        ("LMS Karras", "Automatic", ("LMS", "Karras")),
        ("k_lms", "Automatic", ("LMS", "Automatic")),
        ("k_lms_ka", "Automatic", ("LMS", "Karras")),
        ("DPM++ SDE", "Automatic", ("DPM++ SDE", "Automatic")),
        ("DPM++ SDE Karras", "Automatic", ("DPM++ SDE", "Karras")),
        ("dpm++ sde karras", "", ("DPM++ SDE", "Karras")),
        ("k_dpmpp_sde", "Exponential", ("DPM++ SDE", "Exponential")),
        ("k_dpmpp_sde_ka", "Automatic", ("DPM++ SDE", "Karras")),
        ("Euler", "beta", ("Euler", "Beta")),
        ("DPM++ 2M Beta", "Automatic", ("DPM++ 2M", "Beta")),
    ],
)
def test_fused_and_alias_names(name: str, schedule: str, expected: tuple[str, str]) -> None:
    assert resolve_sampler(name, schedule) == expected
    scheduler = make_scheduler(sd_config(), name, schedule)
    assert type(scheduler) is EXPECTED[expected[0]][0]


def test_fused_name_conflicting_with_schedule_type_raises() -> None:
    with pytest.raises(ValueError, match="already sets schedule type 'Karras'"):
        resolve_sampler("DPM++ 2M Karras", "Exponential")
    with pytest.raises(ValueError, match="conflicts"):
        make_scheduler(sd_config(), "DPM++ 2M SDE Exponential", "Karras")


def test_unknown_names_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="Unknown sampler 'Eular'") as info:
        resolve_sampler("Eular")
    for name in SAMPLER_NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="Unknown schedule type 'Karas'"):
        resolve_sampler("Euler", "Karas")
    with pytest.raises(ValueError, match="Choose a sampler"):
        resolve_sampler("")
    # A1111 samplers and schedules that diffusers cannot run faithfully here say so.
    for name in ("DPM++ 2S a", "DPM++ 2S a Karras", "DPM++ 3M SDE Exponential", "Restart", "DPM fast", "k_dpm_ad",
                 "DPM adaptive", "DDIM CFG++"):
        with pytest.raises(ValueError, match="not available in LoRA Studio"):
            resolve_sampler(name)
    with pytest.raises(ValueError, match="'Polyexponential' is not available"):
        resolve_sampler("Euler", "Polyexponential")
    with pytest.raises(ValueError, match="cannot use schedule type 'Beta'"):
        resolve_sampler("Euler a", "Beta")


def test_request_validation_uses_resolve_sampler() -> None:
    Txt2ImgRequest(sampler="DPM++ 2M Karras").validate()
    Txt2ImgRequest(sampler="DPM++ 2M", schedule_type="Exponential").validate()
    with pytest.raises(ValueError, match="Unknown sampler"):
        Txt2ImgRequest(sampler="nope").validate()
    with pytest.raises(ValueError, match="cannot use schedule type"):
        Txt2ImgRequest(sampler="Euler a", schedule_type="Karras").validate()


def test_latents_are_never_clipped() -> None:
    ddpm = dict(DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).config)
    assert ddpm["clip_sample"] is True  # DDPM's default, which DDIM would inherit
    ddim = make_scheduler(ddpm, "DDIM", "Automatic")
    assert type(ddim) is DDIMScheduler
    assert ddim.config.clip_sample is False
    assert ddim.config.thresholding is False
    assert make_scheduler(ddpm, "Heun", "Automatic").config.clip_sample is False
    assert ddpm["clip_sample"] is True  # the caller's config is left alone


def test_model_config_sigma_flags_do_not_leak() -> None:
    """A model config that asks for Karras sigmas must not turn them on for Euler/Uniform."""
    config = dict(DPMSolverMultistepScheduler(**SD_SCHEDULER, use_karras_sigmas=True).config)
    assert make_scheduler(config, "DPM++ 2M", "Uniform").config.use_karras_sigmas is False
    assert make_scheduler(config, "Euler", "Automatic").config.use_karras_sigmas is False
    assert scheduler_overrides("Euler a") == {"timestep_spacing": "linspace"}


def test_sdxl_config_keeps_full_range_for_sigma_samplers() -> None:
    sdxl = dict(EulerDiscreteScheduler(**SD_SCHEDULER, interpolation_type="linear").config)
    assert sdxl["timestep_spacing"] == "leading"
    euler = make_scheduler(sdxl, "Euler", "Automatic")
    euler.set_timesteps(30)
    assert int(euler.timesteps[0]) == 999
    ddim = make_scheduler(sdxl, "DDIM", "Automatic")
    assert ddim.config.timestep_spacing == "leading"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and do not slow down when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sd1_pipe(one_thread):
    """A tiny SD 1.x pipeline and its own scheduler config (each run builds from that)."""
    pipe = build_tiny_pipeline("sd1")
    pipe.set_progress_bar_config(disable=True)
    return pipe, dict(pipe.scheduler.config)


@pytest.fixture(scope="module")
def sd2_pipe(one_thread):
    pipe = build_tiny_pipeline("sd2")
    pipe.set_progress_bar_config(disable=True)
    return pipe, dict(pipe.scheduler.config)


def _run(pipe_and_config, sampler: str, schedule: str = "Automatic", seed: int | list[int] = 0,
         scheduler=None) -> np.ndarray:
    """The image (or, for a list of seeds, the images: one generator each, as the worker runs a batch)."""
    pipe, config = pipe_and_config
    pipe.scheduler = scheduler if scheduler is not None else make_scheduler(config, sampler, schedule)
    seeds = seed if isinstance(seed, list) else [seed]
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    result = pipe(
        "a red fox",
        negative_prompt="blurry",
        num_inference_steps=3,
        height=64,
        width=64,
        num_images_per_prompt=len(seeds),
        generator=generators if isinstance(seed, list) else generators[0],
        output_type="np",
    )
    return result.images if isinstance(seed, list) else result.images[0]


RUNS = [(name, "Automatic") for name in SAMPLER_NAMES] + [
    ("Euler", "Karras"),
    ("Euler", "Exponential"),
    ("Euler a", "SGM Uniform"),
    ("DPM++ 2M", "Uniform"),
    ("DPM++ 2M SDE", "Karras"),
    ("LMS", "Karras"),
    ("DPM++ SDE", "Beta"),
    ("Euler", "Beta"),
]


@pytest.mark.parametrize(("sampler", "schedule"), RUNS)
def test_each_sampler_runs_on_a_tiny_pipeline(sd1_pipe, sampler: str, schedule: str) -> None:
    image = _run(sd1_pipe, sampler, schedule)
    assert image.shape == (64, 64, 3)
    assert np.isfinite(image).all()
    assert float(image.std()) > 1e-3


def test_samplers_differ(sd1_pipe) -> None:
    euler = _run(sd1_pipe, "Euler")
    assert np.abs(euler - _run(sd1_pipe, "DDIM")).max() > 1e-3
    assert np.abs(euler - _run(sd1_pipe, "Euler", seed=1)).max() > 1e-3
    assert np.array_equal(euler, _run(sd1_pipe, "Euler"))


def test_dpmpp_sde_is_deterministic_under_a_fixed_generator(sd1_pipe) -> None:
    """diffusers' DPMSolverSDEScheduler seeds its Brownian tree from the global RNG when
    noise_sampler_seed is None; ours seeds it from the pipeline's generator, and only from that."""
    torch.manual_seed(1)
    first = _run(sd1_pipe, "DPM++ SDE")
    torch.manual_seed(2)
    before = torch.get_rng_state()
    second = _run(sd1_pipe, "DPM++ SDE")
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is neither used nor moved
    assert np.array_equal(first, second)
    assert np.abs(first - _run(sd1_pipe, "DPM++ SDE", seed=1)).max() > 1e-3
    # The tree's seed is the generator's seed: the same as diffusers' class told noise_sampler_seed=0.
    _, config = sd1_pipe
    told = DPMSolverSDEScheduler.from_config(config, **scheduler_overrides("DPM++ SDE") | {"noise_sampler_seed": 0})
    assert np.array_equal(first, _run(sd1_pipe, "DPM++ SDE", scheduler=told))
    # A reused scheduler (the worker keeps one for every batch of a job) draws a fresh tree per run.
    reused = make_scheduler(config, "DPM++ SDE")
    assert np.array_equal(first, _run(sd1_pipe, "DPM++ SDE", scheduler=reused))
    assert not np.array_equal(first, _run(sd1_pipe, "DPM++ SDE", seed=1, scheduler=reused))
    assert np.array_equal(first, _run(sd1_pipe, "DPM++ SDE", scheduler=reused))


def test_dpmpp_sde_batch_gives_each_image_its_own_seed(sd1_pipe) -> None:
    """As in A1111, one Brownian tree per image, seeded with that image's seed: an image in a
    batch is the image its seed gives alone (up to batched arithmetic)."""
    batch = _run(sd1_pipe, "DPM++ SDE", seed=[3, 4])
    for image, seed in zip(batch, (3, 4)):
        alone = _run(sd1_pipe, "DPM++ SDE", seed=[seed])
        assert np.abs(image - alone).max() < 1e-4, seed
    assert np.abs(batch[0] - batch[1]).max() > 1e-3


def test_v_prediction_carries_over(sd2_pipe) -> None:
    _, config = sd2_pipe
    assert config["prediction_type"] == "v_prediction"
    for sampler in SAMPLER_NAMES:
        for schedule in supported_schedule_types(sampler):
            built = make_scheduler(config, sampler, schedule)
            assert built.config.prediction_type == "v_prediction", (sampler, schedule)
    image = _run(sd2_pipe, "DPM++ 2M", "Karras")
    assert np.isfinite(image).all() and float(image.std()) > 1e-3
