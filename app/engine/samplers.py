"""A1111 sampler and schedule-type names, and the diffusers schedulers that run them.

A1111 1.9+ shows a sampler ("DPM++ 2M") and a schedule type ("Karras") as two fields; before 1.9
they were fused into one name ("DPM++ 2M Karras"), which A1111 still accepts. Here both forms are
accepted and turned into the canonical pair, and ``make_scheduler`` builds the diffusers scheduler
from the model's own scheduler config (so betas, ``num_train_timesteps`` and ``prediction_type``,
v-prediction included, carry over).

Facts this module follows (A1111 1.9/1.10 ``modules/sd_samplers_kdiffusion.py``,
``modules/sd_schedulers.py``, ``modules/sd_samplers_timesteps*.py``, ``modules/shared_options.py``):

* "Automatic" means the sampler's own default schedule: Karras for DPM++ 2M, DPM++ SDE, DPM2,
  DPM2 a (and DPM++ 2S a, Restart); Exponential for DPM++ 2M SDE, DPM++ 2M SDE Heun (and
  DPM++ 3M SDE); for the others (Euler a, Euler, LMS, Heun) the model's own discretisation, which
  is the "Uniform" schedule (sigmas at timesteps spaced evenly from 999 down to 0, then 0).
* In the infotext A1111 writes the resolved label ("Schedule type: Karras" for an Automatic
  DPM++ 2M) when Automatic resolves to a named schedule, and "Automatic" otherwise.
* DDIM, PLMS and UniPC ignore the schedule type: DDIM and PLMS step at ``range(0, 1000,
  1000 // steps) + 1`` (diffusers ``timestep_spacing="leading"``, ``steps_offset=1``), UniPC uses
  variant bh1, order 3, lower-order final and a time-uniform grid ending at t=0.
* Karras, Exponential and Beta span the model's full sigma range, like A1111's sigma_min/sigma_max.
  Beta is A1111's ``beta_scheduler`` with its default alpha = beta = 0.6, which are diffusers'
  ``use_beta_sigmas`` values too.
* LMS is k-diffusion's ``sample_lms`` (order 4; diffusers' ``LMSDiscreteScheduler.step`` defaults
  to order 4 as well). DPM++ SDE is ``sample_dpmpp_sde`` (r = 1/2, eta = 1, s_noise = 1; two model
  calls per step), which A1111 feeds Brownian-tree noise seeded with each image's seed.

The sigma-based samplers therefore always get ``timestep_spacing="linspace"`` (the full 999..0
range A1111 uses), whatever the model's config says: SD 1.x/SDXL configs say "leading", which
would start sampling below the model's maximum noise. SGM Uniform is diffusers'
``timestep_spacing="trailing"``.

A sampler offers a schedule type only where its diffusers class has the setting for it: Euler a
(``EulerAncestralDiscreteScheduler``) has no Karras, Exponential or Beta sigmas, so it offers
Automatic, Uniform and SGM Uniform only.

Determinism of DPM++ SDE: diffusers' ``DPMSolverSDEScheduler`` takes no ``generator``; with
``noise_sampler_seed=None`` it seeds its Brownian tree from the *global* torch RNG
(``torch.randint`` in ``BatchedBrownianTree``), so two runs with the same ``generator`` give
different images. ``make_scheduler`` therefore builds ``SeededDPMSolverSDEScheduler``, whose
``step`` accepts the pipeline's ``generator`` (diffusers pipelines pass it to any ``step`` that
takes one) and seeds the tree from it, one tree per image for a list of generators, with each
generator's ``initial_seed()``: that is the image seed, as in A1111. It never touches a generator's
state nor the global RNG.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from diffusers import (
    DDIMScheduler,
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
from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

AUTOMATIC = "Automatic"
UNIFORM = "Uniform"
KARRAS = "Karras"
EXPONENTIAL = "Exponential"
SGM_UNIFORM = "SGM Uniform"
BETA = "Beta"

# In A1111's order (its list puts Beta last).
SCHEDULE_TYPES: tuple[str, ...] = (AUTOMATIC, UNIFORM, KARRAS, EXPONENTIAL, SGM_UNIFORM, BETA)

# What each named schedule sets on a sigma-based diffusers scheduler.
_SCHEDULE_OVERRIDES: Mapping[str, Mapping[str, object]] = MappingProxyType(
    {
        UNIFORM: MappingProxyType({}),
        KARRAS: MappingProxyType({"use_karras_sigmas": True}),
        EXPONENTIAL: MappingProxyType({"use_exponential_sigmas": True}),
        SGM_UNIFORM: MappingProxyType({"timestep_spacing": "trailing"}),
        BETA: MappingProxyType({"use_beta_sigmas": True}),  # alpha = beta = 0.6, as A1111's
    }
)

# Other spellings A1111 accepts for a schedule type (its internal names and aliases).
_SCHEDULE_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "automatic": AUTOMATIC,
        "uniform": UNIFORM,
        "karras": KARRAS,
        "exponential": EXPONENTIAL,
        "sgm_uniform": SGM_UNIFORM,
        "sgmuniform": SGM_UNIFORM,
        "beta": BETA,
    }
)

# A1111 schedule types LoRA Studio does not offer, with the reason.
_UNAVAILABLE_SCHEDULES: Mapping[str, str] = MappingProxyType(
    {
        "Polyexponential": "diffusers has no equivalent",
        "KL Optimal": "diffusers has no equivalent",
        "Align Your Steps": "diffusers has no equivalent",
        "Simple": "diffusers has no exact equivalent",
        "Normal": "diffusers has no exact equivalent; Uniform is nearly the same",
        "DDIM": "diffusers has no equivalent for k-diffusion samplers",
    }
)
_UNAVAILABLE_SCHEDULE_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "polyexponential": "Polyexponential",
        "kl_optimal": "KL Optimal",
        "align_your_steps": "Align Your Steps",
        "simple": "Simple",
        "normal": "Normal",
        "ddim": "DDIM",
    }
)

_OWN_SCHEDULE: tuple[str, ...] = (AUTOMATIC,)

# Settings every sigma-based scheduler gets before the schedule's own: the full timestep range and
# no sigma conversion left over from the model's config.
_SIGMA_BASE: Mapping[str, object] = MappingProxyType(
    {
        "timestep_spacing": "linspace",
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "use_flow_sigmas": False,
    }
)

# Latent models must never clip or threshold the predicted x0 (see offline-facts "Schedulers").
_LATENT_SAFE: Mapping[str, object] = MappingProxyType({"clip_sample": False, "thresholding": False})


@dataclass(frozen=True)
class SamplerSpec:
    """How one A1111 sampler maps onto a diffusers scheduler."""

    name: str
    scheduler_class: type[SchedulerMixin]
    overrides: Mapping[str, object]
    schedule_types: tuple[str, ...]  # the schedule types it supports, Automatic first
    automatic: str | None = None  # what Automatic means in A1111 1.9+; None = the model's own
    sigma_based: bool = True  # True: k-diffusion style, takes _SIGMA_BASE and schedule overrides
    aliases: tuple[str, ...] = ()
    a1111: bool = True  # False: not an A1111 sampler (LoRA Studio extra)


def _init_parameters(cls: type[SchedulerMixin]) -> frozenset[str]:
    return frozenset(inspect.signature(cls.__init__).parameters) - {"self"}


def _sigma_schedules(cls: type[SchedulerMixin]) -> tuple[str, ...]:
    """The schedule types a sigma-based scheduler class can run: those whose settings it accepts."""
    accepted = _init_parameters(cls)
    return (AUTOMATIC,) + tuple(
        label for label, settings in _SCHEDULE_OVERRIDES.items() if set(settings) <= accepted
    )


def _spec(
    name: str, cls: type[SchedulerMixin], *, overrides: Mapping[str, object] | None = None, **kwargs: object
) -> SamplerSpec:
    """A SamplerSpec; a sigma-based one without ``schedule_types`` offers what its class supports."""
    if kwargs.get("sigma_based", True) and "schedule_types" not in kwargs:
        kwargs["schedule_types"] = _sigma_schedules(cls)
    return SamplerSpec(name, cls, MappingProxyType(dict(overrides or {})), **kwargs)  # type: ignore[arg-type]


def _brownian_seed(generator: object, batch_size: int) -> int | list[int] | None:
    """The Brownian-tree seed(s) for a pipeline's ``generator``: its ``initial_seed()``, one per image
    for a list of generators as long as the batch; None when there is no generator."""
    if isinstance(generator, torch.Generator):
        return generator.initial_seed()
    if isinstance(generator, (list, tuple)) and generator and all(isinstance(g, torch.Generator) for g in generator):
        seeds = [g.initial_seed() for g in generator]
        return seeds if len(seeds) == batch_size else seeds[0]
    return None


class SeededDPMSolverSDEScheduler(DPMSolverSDEScheduler):
    """``DPMSolverSDEScheduler`` whose Brownian noise follows the pipeline's ``generator``.

    diffusers' class seeds its Brownian tree from ``config.noise_sampler_seed`` or, when that is
    None, from the global torch RNG, so the same ``generator`` gives different images. This
    ``step`` accepts ``generator`` (pipelines pass it to a ``step`` that takes one) and, when
    ``noise_sampler_seed`` is None, seeds the tree with the generator's ``initial_seed()``, one
    tree per image for a list of generators (A1111 seeds one tree per image with its seed). The
    tree is made afresh after each ``set_timesteps``, so a reused scheduler follows each run's
    generators. Without a generator it behaves as diffusers' class.
    """

    def step(  # type: ignore[override]
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
        s_noise: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ):
        if self.noise_sampler is None and self.noise_sampler_seed is None:
            seed = _brownian_seed(generator, sample.shape[0])
            if seed is not None:
                # As diffusers' step builds it, with the seed from the generator.
                min_sigma, max_sigma = self.sigmas[self.sigmas > 0].min(), self.sigmas.max()
                self.noise_sampler = BrownianTreeNoiseSampler(sample, min_sigma.item(), max_sigma.item(), seed)
        return super().step(model_output, timestep, sample, return_dict=return_dict, s_noise=s_noise)


_DPMPP: Mapping[str, object] = MappingProxyType(
    {"solver_order": 2, "final_sigmas_type": "zero", "lower_order_final": True, "euler_at_final": False}
)

# In A1111's order (the sampler dropdown follows it).
_SPECS: tuple[SamplerSpec, ...] = (
    _spec(
        "DPM++ 2M",
        DPMSolverMultistepScheduler,
        overrides={**_DPMPP, "algorithm_type": "dpmsolver++", "solver_type": "midpoint"},
        automatic=KARRAS,
        aliases=("k_dpmpp_2m",),
    ),
    _spec(
        "DPM++ SDE",
        SeededDPMSolverSDEScheduler,
        overrides={"noise_sampler_seed": None},  # seeded from the pipeline's generator, see the class
        automatic=KARRAS,
        aliases=("k_dpmpp_sde",),
    ),
    _spec(
        "DPM++ 2M SDE",
        DPMSolverMultistepScheduler,
        overrides={**_DPMPP, "algorithm_type": "sde-dpmsolver++", "solver_type": "midpoint"},
        automatic=EXPONENTIAL,
        aliases=("k_dpmpp_2m_sde",),
    ),
    _spec(
        "DPM++ 2M SDE Heun",
        DPMSolverMultistepScheduler,
        overrides={**_DPMPP, "algorithm_type": "sde-dpmsolver++", "solver_type": "heun"},
        automatic=EXPONENTIAL,
        aliases=("k_dpmpp_2m_sde_heun",),
    ),
    # diffusers' ancestral Euler has no Karras/Exponential/Beta sigmas: Automatic, Uniform, SGM Uniform.
    _spec("Euler a", EulerAncestralDiscreteScheduler, aliases=("k_euler_a", "k_euler_ancestral", "Euler ancestral")),
    _spec("Euler", EulerDiscreteScheduler, aliases=("k_euler",)),
    _spec("LMS", LMSDiscreteScheduler, aliases=("k_lms",)),  # step() runs order 4, as sample_lms
    _spec("Heun", HeunDiscreteScheduler, aliases=("k_heun",)),
    _spec("DPM2", KDPM2DiscreteScheduler, automatic=KARRAS, aliases=("k_dpm_2",)),
    _spec(
        "DPM2 a",
        KDPM2AncestralDiscreteScheduler,
        automatic=KARRAS,
        aliases=("k_dpm_2_a",),
    ),
    _spec(
        "DDIM",
        DDIMScheduler,
        overrides={
            "timestep_spacing": "leading",
            "steps_offset": 1,
            "set_alpha_to_one": False,
            "clip_sample": False,
        },
        schedule_types=_OWN_SCHEDULE,
        sigma_based=False,
    ),
    _spec(
        "PLMS",
        PNDMScheduler,
        overrides={"skip_prk_steps": True, "timestep_spacing": "leading", "steps_offset": 1, "set_alpha_to_one": False},
        schedule_types=_OWN_SCHEDULE,
        sigma_based=False,
    ),
    _spec(
        "UniPC",
        UniPCMultistepScheduler,
        overrides={
            "solver_type": "bh1",
            "solver_order": 3,
            "lower_order_final": True,
            "predict_x0": True,
            "timestep_spacing": "linspace",
            "steps_offset": 0,
            "final_sigmas_type": "sigma_min",
            "use_karras_sigmas": False,
            "use_exponential_sigmas": False,
            "use_beta_sigmas": False,
            "use_flow_sigmas": False,
        },
        schedule_types=_OWN_SCHEDULE,
        sigma_based=False,
    ),
    _spec(  # diffusers' LCM solver: its own timesteps (LCM's 50-step grid) and boundary scalings
        "LCM",
        LCMScheduler,
        overrides={"original_inference_steps": 50, "timestep_spacing": "leading", "steps_offset": 1,
                   "set_alpha_to_one": True},
        schedule_types=_OWN_SCHEDULE,
        sigma_based=False,
        aliases=("k_lcm",),
    ),
    _spec(
        "DEIS",
        DEISMultistepScheduler,
        overrides={"solver_order": 3, "algorithm_type": "deis", "solver_type": "logrho", "lower_order_final": True},
        a1111=False,
    ),
)

SAMPLERS: Mapping[str, SamplerSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
SAMPLER_NAMES: tuple[str, ...] = tuple(spec.name for spec in _SPECS)

# A1111 samplers LoRA Studio does not offer, with the reason, and what "Automatic" means for them
# (so that an infotext naming them still parses).
_UNAVAILABLE_SAMPLERS: Mapping[str, str] = MappingProxyType(
    {
        "DPM++ 2S a": "diffusers has no equivalent scheduler",
        "DPM++ 3M SDE": "diffusers' third-order SDE solver does not match k-diffusion's",
        "DPM fast": "diffusers has no equivalent scheduler",
        "DPM adaptive": "diffusers has no equivalent scheduler",
        "Restart": "diffusers has no equivalent scheduler",
        "DDIM CFG++": "diffusers has no equivalent scheduler",
    }
)
_UNAVAILABLE_AUTOMATIC: Mapping[str, str] = MappingProxyType(
    {"DPM++ 2S a": KARRAS, "DPM++ 3M SDE": EXPONENTIAL, "Restart": KARRAS}
)
_UNAVAILABLE_SAMPLER_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "k_dpmpp_2s_a": "DPM++ 2S a",
        "k_dpmpp_3m_sde": "DPM++ 3M SDE",
        "k_dpm_fast": "DPM fast",
        "k_dpm_ad": "DPM adaptive",
        "restart": "Restart",
    }
)

# A1111's aliases for its old fused names that do not end in a schedule label.
_FUSED_ALIASES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "k_lms_ka": ("LMS", KARRAS),
        "k_dpm_2_ka": ("DPM2", KARRAS),
        "k_dpm_2_a_ka": ("DPM2 a", KARRAS),
        "k_dpmpp_2m_ka": ("DPM++ 2M", KARRAS),
        "k_dpmpp_2m_sde_exp": ("DPM++ 2M SDE", EXPONENTIAL),
        "k_dpmpp_2m_sde_heun_ka": ("DPM++ 2M SDE Heun", KARRAS),
        "k_dpmpp_2m_sde_heun_exp": ("DPM++ 2M SDE Heun", EXPONENTIAL),
        "k_dpmpp_sde_ka": ("DPM++ SDE", KARRAS),
        "k_dpmpp_2s_a_ka": ("DPM++ 2S a", KARRAS),
        "k_dpmpp_3m_sde_ka": ("DPM++ 3M SDE", KARRAS),
        "k_dpmpp_3m_sde_exp": ("DPM++ 3M SDE", EXPONENTIAL),
    }
)


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


def _build_sampler_lookup() -> Mapping[str, str]:
    """Casefolded name or alias -> canonical name, for offered and unavailable samplers."""
    table: dict[str, str] = {}
    for spec in _SPECS:
        for alias in (spec.name, *spec.aliases):
            table[_key(alias)] = spec.name
    for name in _UNAVAILABLE_SAMPLERS:
        table[_key(name)] = name
    for alias, name in _UNAVAILABLE_SAMPLER_ALIASES.items():
        table[_key(alias)] = name
    return MappingProxyType(table)


def _build_schedule_lookup() -> Mapping[str, str]:
    """Casefolded label or alias -> canonical label, for offered and unavailable schedule types."""
    table: dict[str, str] = {_key(label): label for label in SCHEDULE_TYPES}
    table.update({_key(alias): label for alias, label in _SCHEDULE_ALIASES.items()})
    table.update({_key(label): label for label in _UNAVAILABLE_SCHEDULES})
    table.update({_key(alias): label for alias, label in _UNAVAILABLE_SCHEDULE_ALIASES.items()})
    return MappingProxyType(table)


_SAMPLER_LOOKUP: Mapping[str, str] = _build_sampler_lookup()
_SCHEDULE_LOOKUP: Mapping[str, str] = _build_schedule_lookup()
# Longest first, so that "sgm uniform" wins over "uniform" when stripping a fused suffix.
_SCHEDULE_SUFFIXES: tuple[str, ...] = tuple(sorted(_SCHEDULE_LOOKUP, key=len, reverse=True))


def split_sampler_name(name: str) -> tuple[str, str | None]:
    """Split a sampler name, old fused form included, into (sampler, schedule type or None).

    Knows A1111's samplers even where LoRA Studio does not offer them ("DPM++ SDE Karras" ->
    ("DPM++ SDE", "Karras")). Case and repeated spaces do not matter. Raises ValueError for a
    name that is no sampler at all.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"Choose a sampler: one of {', '.join(SAMPLER_NAMES)}.")
    samplers, schedules = _SAMPLER_LOOKUP, _SCHEDULE_LOOKUP
    key = _key(name)
    if key in samplers:
        return samplers[key], None
    if key in _FUSED_ALIASES:
        return _FUSED_ALIASES[key]
    # "DPM++ 2M Karras", "Euler a SGM Uniform", "DPM++ 2M sgm_uniform": strip a schedule suffix.
    for schedule_key in _SCHEDULE_SUFFIXES:
        suffix = " " + schedule_key
        if key.endswith(suffix) and key[: -len(suffix)] in samplers:
            return samplers[key[: -len(suffix)]], schedules[schedule_key]
    raise ValueError(f"Unknown sampler {name!r}; choose one of {', '.join(SAMPLER_NAMES)}.")


def canonical_schedule_type(schedule_type: str | None) -> str:
    """The canonical label of a schedule type ("karras" -> "Karras"; "" or None -> "Automatic").

    Raises ValueError for an unknown label and for A1111 schedule types LoRA Studio lacks.
    """
    if schedule_type is None or (isinstance(schedule_type, str) and not schedule_type.strip()):
        return AUTOMATIC
    if not isinstance(schedule_type, str):
        raise ValueError(f"Schedule type must be text, got {schedule_type!r}.")
    label = _SCHEDULE_LOOKUP.get(_key(schedule_type))
    if label is None:
        raise ValueError(f"Unknown schedule type {schedule_type!r}; choose one of {', '.join(SCHEDULE_TYPES)}.")
    if label in _UNAVAILABLE_SCHEDULES:
        raise ValueError(
            f"Schedule type {label!r} is not available in LoRA Studio ({_UNAVAILABLE_SCHEDULES[label]}); "
            f"choose one of {', '.join(SCHEDULE_TYPES)}."
        )
    return label


def resolve_sampler(name: str, schedule_type: str = AUTOMATIC) -> tuple[str, str]:
    """Canonical (sampler, schedule type) for a sampler name and schedule type.

    Accepts old fused names ("DPM++ 2M Karras"), whose suffix sets the schedule type; a
    different non-Automatic ``schedule_type`` next to one raises. "Automatic" stays "Automatic"
    (see ``automatic_schedule_type`` for what it means). Raises ValueError naming the valid
    choices for an unknown name, a sampler LoRA Studio lacks, or a combination the sampler
    cannot run (for example "Euler a" with "Karras").
    """
    sampler, fused = split_sampler_name(name)
    if sampler in _UNAVAILABLE_SAMPLERS:
        raise ValueError(
            f"Sampler {sampler!r} is not available in LoRA Studio ({_UNAVAILABLE_SAMPLERS[sampler]}); "
            f"choose one of {', '.join(SAMPLER_NAMES)}."
        )
    if fused is not None:
        fused = canonical_schedule_type(fused)
        if fused == AUTOMATIC:
            fused = None
    given = canonical_schedule_type(schedule_type)
    if fused is not None and given not in (AUTOMATIC, fused):
        raise ValueError(
            f"Sampler name {name!r} already sets schedule type {fused!r}, which conflicts with "
            f"schedule type {given!r}: use sampler {sampler!r} with schedule type {given!r}."
        )
    chosen = fused if fused is not None else given
    spec = SAMPLERS[sampler]
    if chosen not in spec.schedule_types:
        raise ValueError(
            f"Sampler {sampler!r} cannot use schedule type {chosen!r}; "
            f"it supports {', '.join(spec.schedule_types)}."
        )
    return sampler, chosen


def read_sampler(name: str, schedule_type: str | None = AUTOMATIC) -> tuple[str, str]:
    """(sampler, schedule type) as ``resolve_sampler`` gives them, or, for a choice LoRA Studio cannot run,
    as written (old fused names split), so that ``GenerationRequest.validate()`` explains it. DDIM, PLMS and
    UniPC ignore the schedule type in A1111, so theirs reads as Automatic."""
    schedule = schedule_type or AUTOMATIC
    try:
        return resolve_sampler(name, schedule)
    except ValueError:
        pass
    try:
        sampler, fused = split_sampler_name(name)
    except ValueError:
        return name.strip(), schedule
    try:
        given = canonical_schedule_type(schedule)
    except ValueError:
        given = schedule
    spec = SAMPLERS.get(sampler)
    if spec is not None and spec.schedule_types == (AUTOMATIC,):
        return sampler, AUTOMATIC
    return sampler, fused or given


def supported_schedule_types(sampler: str) -> tuple[str, ...]:
    """The schedule types a sampler can run, Automatic first (for a UI dropdown)."""
    canonical, _ = resolve_sampler(sampler)
    return SAMPLERS[canonical].schedule_types


def automatic_schedule_type(sampler: str) -> str | None:
    """What A1111 1.9+ runs for "Automatic" with this sampler: a schedule label, or None when the
    sampler uses its own discretisation (Uniform for k-diffusion samplers; DDIM/PLMS/UniPC's own)."""
    canonical, _ = split_sampler_name(sampler)
    if canonical in _UNAVAILABLE_AUTOMATIC:
        return _UNAVAILABLE_AUTOMATIC[canonical]
    spec = SAMPLERS.get(canonical)
    return spec.automatic if spec is not None else None


def infotext_schedule_type(sampler: str, schedule_type: str = AUTOMATIC) -> str:
    """The "Schedule type" value A1111 1.9+ writes: Automatic resolved to the sampler's default
    schedule where it has one ("DPM++ 2M" -> "Karras"), else the value as given."""
    try:
        canonical, chosen = resolve_sampler(sampler, schedule_type)
    except ValueError:
        try:
            canonical, fused = split_sampler_name(sampler)
            chosen = fused or canonical_schedule_type(schedule_type)
        except ValueError:
            return schedule_type or AUTOMATIC
    if chosen == AUTOMATIC:
        return automatic_schedule_type(canonical) or AUTOMATIC
    return chosen


def scheduler_overrides(sampler: str, schedule_type: str = AUTOMATIC) -> dict[str, object]:
    """The config values ``make_scheduler`` sets on top of the model's scheduler config."""
    canonical, chosen = resolve_sampler(sampler, schedule_type)
    spec = SAMPLERS[canonical]
    overrides: dict[str, object] = {}
    if spec.sigma_based:
        overrides.update(_SIGMA_BASE)
        schedule = (spec.automatic or UNIFORM) if chosen == AUTOMATIC else chosen
        overrides.update(_SCHEDULE_OVERRIDES[schedule])
    overrides.update(spec.overrides)
    overrides.update(_LATENT_SAFE)
    accepted = _init_parameters(spec.scheduler_class)
    return {key: value for key, value in overrides.items() if key in accepted}


def make_scheduler(base_config: Mapping[str, object], sampler: str, schedule_type: str = AUTOMATIC) -> SchedulerMixin:
    """A diffusers scheduler for an A1111 sampler and schedule type, built from the model's own
    scheduler config (``pipe.scheduler.config``), so its betas, ``num_train_timesteps`` and
    ``prediction_type`` carry over. Raises ValueError for an unknown or unsupported choice."""
    canonical, _ = resolve_sampler(sampler, schedule_type)
    overrides = scheduler_overrides(sampler, schedule_type)
    return SAMPLERS[canonical].scheduler_class.from_config(dict(base_config), **overrides)
