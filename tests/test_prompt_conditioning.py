"""A1111 prompts -> conditioning tensors on tiny CLIP encoders: emphasis numerics, chunks, BREAK,
SDXL's two encoders, textual inversions, per-step schedules through the engine, the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from app.engine import Engine, EngineConfig, Img2ImgRequest, InpaintRequest, Txt2ImgRequest
from app.engine.conditioning import EncodeSettings, PromptEmbeddings, PromptEncoder, chunk_text
from app.engine.prompt_chunks import EmbeddingWords
from app.engine.tiny import build_tiny_pipeline

SMALL = dict(width=64, height=64, steps=6, save=False)


@pytest.fixture(scope="module")
def sd1():
    return build_tiny_pipeline("sd1")


@pytest.fixture(scope="module")
def sdxl():
    return build_tiny_pipeline("sdxl")


def plain_encoding(pipe, text: str) -> torch.Tensor:
    """The last hidden state of the text encoder on ``text`` as diffusers tokenizes it (one chunk)."""
    ids = pipe.tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids)[0]


def positive(encoder: PromptEncoder, prompt: str, emphasis: str = "Original", steps: int = 10) -> torch.Tensor:
    return encoder.encode(prompt, "", steps, EncodeSettings(emphasis=emphasis)).at(1)[0].embeds


# ----- emphasis -------------------------------------------------------------------------------


def test_original_emphasis_scales_rows_and_restores_the_mean(sd1) -> None:
    encoder = PromptEncoder(sd1, "sd1")
    z = plain_encoding(sd1, "a red circle")
    weights = torch.ones(1, 77, 1)
    weights[0, 2] = 1.5  # start token, "a", "red" <- weighted
    expected = z * weights * (z.mean() / (z * weights).mean())
    got = positive(encoder, "a (red:1.5) circle")
    assert torch.allclose(got, expected, atol=1e-6)
    assert got.mean().item() == pytest.approx(z.mean().item(), abs=1e-6)
    assert not torch.allclose(got[0, 2], z[0, 2])  # the weighted row moved, the mean did not


def test_no_norm_scales_rows_only(sd1) -> None:
    encoder = PromptEncoder(sd1, "sd1")
    z = plain_encoding(sd1, "a red circle")
    got = positive(encoder, "a (red:1.5) circle", emphasis="No norm")
    assert torch.allclose(got[0, 2], z[0, 2] * 1.5, atol=1e-6)
    assert torch.equal(got[0, 3:], z[0, 3:])
    assert abs(got.mean().item() - z.mean().item()) > 1e-4


def test_weight_one_ignore_and_none_modes(sd1) -> None:
    encoder = PromptEncoder(sd1, "sd1")
    plain = plain_encoding(sd1, "a red circle")
    assert torch.equal(positive(encoder, "a (red:1) circle"), plain)
    assert torch.equal(positive(encoder, "a ((red)) [circle]", emphasis="Ignore"), plain)
    literal = plain_encoding(sd1, "a (red:1.5) circle")  # brackets as characters
    assert torch.equal(positive(encoder, "a (red:1.5) circle", emphasis="None"), literal)
    assert not torch.equal(literal, plain)


# ----- chunks ---------------------------------------------------------------------------------


def test_a_150_token_prompt_gives_two_chunks_and_every_word_counts(sd1) -> None:
    encoder = PromptEncoder(sd1, "sd1")
    words = ["cat"] * 150
    conditioning = encoder.encode(" ".join(words), "", 10)
    embeds = conditioning.at(1)[0].embeds
    assert embeds.shape == (1, 154, 32)
    assert conditioning.at(1)[1].embeds.shape == (1, 154, 32)  # the empty negative is padded to match
    assert encoder.token_count(" ".join(words), 10) == (150, 150)
    changed = positive(encoder, " ".join(words[:120] + ["dog"] + words[121:]))
    assert torch.equal(changed[:, :77], embeds[:, :77])  # the first chunk is encoded on its own
    assert not torch.equal(changed[:, 77:], embeds[:, 77:])


def test_comma_backtrack_and_break_place_tokens_as_the_reference_says(sd1) -> None:
    tokenizer = sd1.tokenizer
    comma = tokenizer.get_vocab()[",</w>"]
    cat, dog = tokenizer.convert_tokens_to_ids(["cat</w>", "dog</w>"])
    no_words = EmbeddingWords({}, {})
    chunked = chunk_text(tokenizer, " ".join(["cat"] * 70) + ", " + " ".join(["dog"] * 10), "Original", no_words, comma)
    assert [len(c.tokens) for c in chunked.chunks] == [71, 10]  # the phrase after the comma moved whole
    assert chunked.chunks[0].tokens[-1] == comma and set(chunked.chunks[1].tokens) == {dog}
    far = chunk_text(tokenizer, " ".join(["cat"] * 40) + ", " + " ".join(["dog"] * 40), "Original", no_words, comma)
    assert [len(c.tokens) for c in far.chunks] == [75, 6]  # the comma is 34 tokens back: no backtrack
    broken = chunk_text(tokenizer, "cat BREAK dog", "Original", no_words, comma)
    assert [c.tokens for c in broken.chunks] == [[cat], [dog]]
    assert broken.token_count == 76
    assert positive(PromptEncoder(sd1, "sd1"), "cat BREAK dog").shape == (1, 154, 32)


def test_sdxl_uses_both_encoders_pooled_from_the_first_chunk(sdxl) -> None:
    encoder = PromptEncoder(sdxl, "sdxl")
    long = encoder.encode(" ".join(["cat"] * 100), "", 10).at(1)[0]
    first_chunk_only = encoder.encode(" ".join(["cat"] * 75), "", 10).at(1)[0]
    assert long.embeds.shape == (1, 154, 64)  # 32 + 32 channels side by side
    assert torch.equal(long.pooled, first_chunk_only.pooled)
    assert torch.equal(long.embeds[:, :77], first_chunk_only.embeds)
    skipped = encoder.encode("a red circle", "", 10, EncodeSettings(clip_skip=2)).at(1)[0]
    plain = encoder.encode("a red circle", "", 10).at(1)[0]
    assert torch.equal(skipped.embeds, plain.embeds)  # A1111 reads clip skip on SD 1.x only
    negative = encoder.encode("a red circle", "", 10).at(1)[1]
    assert not negative.embeds.any() and not negative.pooled.any()  # empty negative on SDXL: zeros


def test_garbage_and_very_long_prompts(sd1) -> None:
    encoder = PromptEncoder(sd1, "sd1")
    for prompt in ("((((", "]]]:)", "[a:b:c:d]", "(x:1.2.3)", "[|]", "\\", "a | b [c|d"):
        assert encoder.encode(prompt, prompt, 10).at(1)[0].embeds.shape[1] % 77 == 0
    huge = ("red circle, " * 834)[:10_000]
    conditioning = encoder.encode(huge, "", 10)
    tokens = conditioning.at(1)[0].embeds.shape[1]
    assert tokens % 77 == 0 and tokens // 77 >= 2500 // 75  # about 2,500 tokens, every one encoded


def test_clip_skip_takes_an_earlier_layer_on_sd1_only(sd1) -> None:
    encoder = PromptEncoder(sd1, "sd1")
    skipped = encoder.encode("a red circle", "", 10, EncodeSettings(clip_skip=2)).at(1)[0].embeds
    ids = sd1.tokenizer("a red circle", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = sd1.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        expected = sd1.text_encoder.final_layer_norm(hidden)
    assert torch.equal(skipped, expected)
    with pytest.raises(ValueError, match="Clip skip 5"):
        encoder.encode("x", "", 10, EncodeSettings(clip_skip=5))
    sd2 = build_tiny_pipeline("sd2")
    sd2_encoder = PromptEncoder(sd2, "sd2")
    assert torch.equal(sd2_encoder.encode("x", "", 10, EncodeSettings(clip_skip=5)).at(1)[0].embeds,
                       sd2_encoder.encode("x", "", 10).at(1)[0].embeds)


# ----- textual inversions ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedding_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with tiny SD 1.x and SDXL checkpoints and embeddings in each file form."""
    root = tmp_path_factory.mktemp("ti-models")
    build_tiny_pipeline("sd1").save_pretrained(root / "Stable-diffusion" / "tiny-sd1")
    build_tiny_pipeline("sdxl").save_pretrained(root / "Stable-diffusion" / "tiny-sdxl")
    folder = root / "embeddings"
    (folder / "sub").mkdir(parents=True)
    generator = torch.Generator().manual_seed(3)
    torch.save({"string_to_param": {"*": torch.randn(3, 32, generator=generator)}, "name": "ptstyle", "step": 100},
               folder / "ptstyle.pt")
    save_file({"emb_params": torch.randn(2, 32, generator=generator)}, folder / "sub" / "goodstyle.safetensors")
    save_file({"clip_l": torch.randn(2, 32, generator=generator), "clip_g": torch.randn(2, 32, generator=generator)},
              folder / "xlstyle.safetensors")
    save_file({"<token>": torch.randn(32, generator=generator)}, folder / "diffusersword.safetensors")
    save_file({"emb_params": torch.randn(2, 768, generator=generator)}, folder / "widestyle.safetensors")
    return root


def make_engine(models: Path, tmp_path: Path, **config) -> Engine:
    return Engine(EngineConfig(models_dir=models, outputs_dir=tmp_path, default_model="tiny-sd1", device="cpu",
                               preview_every=0, **config))


def test_embeddings_are_listed_with_what_fits_and_why_not(embedding_models: Path, tmp_path: Path) -> None:
    engine = make_engine(embedding_models, tmp_path)
    try:
        statuses = {s.name: s for s in engine.embeddings("tiny-sd1")[0]}
        assert statuses["goodstyle"].usable and statuses["goodstyle"].vectors == 2
        assert statuses["diffusersword"].usable and statuses["diffusersword"].vectors == 1
        assert "--allow-pickle" in statuses["ptstyle"].skipped_because
        assert "768" in statuses["widestyle"].skipped_because and statuses["widestyle"].family_label == "SD 1.x"
        assert not statuses["xlstyle"].usable
        xl = {s.name: s for s in engine.embeddings("tiny-sdxl")[0]}
        assert xl["xlstyle"].usable and not xl["goodstyle"].usable
    finally:
        engine.shutdown()
    allowed = make_engine(embedding_models, tmp_path, allow_pickle=True)
    try:
        assert {s.name: s for s in allowed.embeddings("tiny-sd1")[0]}["ptstyle"].vectors == 3
        loaded = allowed.manager.get("tiny-sd1")
        _, embeddings = allowed.embeddings("tiny-sd1")
        seen = captured_token_embeddings(
            loaded.txt2img, lambda: loaded.prompt_encoder.encode("ptstyle, cat", "", 10, embeddings=embeddings))
        assert torch.equal(seen[0][0, 1:4], embeddings.vectors["ptstyle"][0])  # the A1111 .pt's three vectors
    finally:
        allowed.shutdown()


def captured_token_embeddings(pipe, run) -> list[torch.Tensor]:
    """What the text encoder's input embedding layer hands on, for each call made inside ``run``."""
    seen: list[torch.Tensor] = []
    handle = pipe.text_encoder.get_input_embeddings().register_forward_hook(
        lambda module, inputs, output: seen.append(output.detach().clone()))
    try:
        run()
    finally:
        handle.remove()
    return seen


def test_an_embedding_replaces_exactly_its_token_positions(embedding_models: Path, tmp_path: Path) -> None:
    engine = make_engine(embedding_models, tmp_path)
    try:
        loaded = engine.manager.get("tiny-sd1")
        encoder = loaded.prompt_encoder
        _, embeddings = engine.embeddings("tiny-sd1")
        vectors = embeddings.vectors["goodstyle"][0]
        table = loaded.txt2img.text_encoder.get_input_embeddings().weight.detach()
        seen = captured_token_embeddings(
            loaded.txt2img, lambda: encoder.encode("a goodstyle circle", "", 10, embeddings=embeddings))
        rows = seen[0][0]
        assert torch.equal(rows[2:4], vectors)  # start, "a", then the two vectors
        circle = loaded.txt2img.tokenizer.convert_tokens_to_ids("circle</w>")
        assert torch.equal(rows[4], table[circle]) and torch.equal(rows[1], table[320])
        weighted = encoder.encode("a (goodstyle:1.2) circle", "", 10, embeddings=embeddings)
        plain = encoder.encode("a goodstyle circle", "", 10, embeddings=embeddings)
        assert not torch.equal(weighted.at(1)[0].embeds, plain.at(1)[0].embeds)
        assert plain.embeddings_used == {"goodstyle": embeddings.hashes["goodstyle"]}
        without = encoder.encode("a goodstyle circle", "", 10, embeddings=PromptEmbeddings())
        assert without.embeddings_used == {}  # an unknown word is just text
        # The hook is gone afterwards: plain encoding is unchanged by having used an embedding.
        assert torch.equal(encoder.encode("a red circle", "", 10).at(1)[0].embeds,
                           plain_encoding(loaded.txt2img, "a red circle"))
        result = engine.generate(Txt2ImgRequest(prompt="a red circle", negative_prompt="(goodstyle:1.2), diffusersword",
                                                seed=1, **SMALL))
        assert 'TI hashes: "goodstyle: ' in result.infotexts[0] and "diffusersword: " in result.infotexts[0]
    finally:
        engine.shutdown()


def test_sdxl_embedding_feeds_each_encoder_its_own_vectors(embedding_models: Path, tmp_path: Path) -> None:
    engine = make_engine(embedding_models, tmp_path)
    try:
        loaded = engine.manager.get("tiny-sdxl")
        _, embeddings = engine.embeddings("tiny-sdxl")
        clip_l, clip_g = embeddings.vectors["xlstyle"]
        seen_g: list[torch.Tensor] = []
        pipe = loaded.txt2img
        handle = pipe.text_encoder_2.get_input_embeddings().register_forward_hook(
            lambda module, inputs, output: seen_g.append(output.detach().clone()))
        try:
            seen_l = captured_token_embeddings(
                pipe, lambda: loaded.prompt_encoder.encode("xlstyle cat", "", 10, embeddings=embeddings))
        finally:
            handle.remove()
        assert torch.equal(seen_l[0][0, 1:3], clip_l) and torch.equal(seen_g[0][0, 1:3], clip_g)
    finally:
        engine.shutdown()


# ----- schedules through the engine -------------------------------------------------------------


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("model", ["tiny-sd1", "tiny-sdxl"])
def test_prompt_editing_switches_mid_run_in_every_task(engine: Engine, model: str) -> None:
    picture = Image.new("RGB", (64, 64), (200, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    tasks = [
        lambda prompt: Txt2ImgRequest(prompt=prompt, model=model, seed=3, **SMALL),
        lambda prompt: Img2ImgRequest(prompt=prompt, model=model, seed=3, init_image=picture, denoising_strength=1.0,
                                      **SMALL),
        lambda prompt: InpaintRequest(prompt=prompt, model=model, seed=3, init_image=picture, mask=mask,
                                      denoising_strength=1.0, **SMALL),
    ]
    for make in tasks:
        first = pixels(engine.generate(make("a red circle")).images[0])
        second = pixels(engine.generate(make("a blue square")).images[0])
        edited = pixels(engine.generate(make("[a red circle:a blue square:3]")).images[0])
        never = pixels(engine.generate(make("[a red circle:a blue square:99]")).images[0])
        at_once = pixels(engine.generate(make("[a red circle:a blue square:0]")).images[0])
        assert np.array_equal(never, first) and np.array_equal(at_once, second)
        assert not np.array_equal(edited, first) and not np.array_equal(edited, second)


def test_alternation_and_batches_keep_each_image_right(engine: Engine) -> None:
    alternating = engine.generate(Txt2ImgRequest(prompt="[a red circle|a blue square]", seed=4, batch_size=2, **SMALL))
    single = engine.generate(Txt2ImgRequest(prompt="[a red circle|a blue square]", seed=5, **SMALL))
    plain = engine.generate(Txt2ImgRequest(prompt="a red circle", seed=5, **SMALL))
    same_twice = engine.generate(Txt2ImgRequest(prompt="[a red circle|a red circle]", seed=5, **SMALL))
    assert np.abs(pixels(alternating.images[1]) - pixels(single.images[0])).max() <= 2  # image 2 of the batch
    assert np.array_equal(pixels(same_twice.images[0]), pixels(plain.images[0]))  # the brackets are read
    assert not np.array_equal(pixels(single.images[0]), pixels(plain.images[0]))


def test_switch_counts_model_calls_as_a1111(engine: Engine) -> None:
    """A1111 counts model calls from 0 and takes the first entry that has not ended: [a:b:2] draws a
    for three calls. Heun makes two calls a step, so its schedule spans twice the steps; img2img at
    strength 0.5 and CFG 1 (no negative half) use the same counts."""
    from app.engine.conditioning import ConditioningSwitcher

    loaded = engine.manager.get("tiny-sd1")
    conditioning = loaded.prompt_encoder.encode("[a red circle:a blue square:2]", "", 6)
    first, later = conditioning.positive[0][1], conditioning.positive[1][1]
    switcher = ConditioningSwitcher(conditioning, batch_size=1)
    stacked = torch.cat([conditioning.negative[0][1].embeds, first.embeds])
    used = []
    for index in range(5):  # the callback after call `index` prepares call index + 1
        out = switcher(None, index, None, {"prompt_embeds": stacked})
        stacked = out["prompt_embeds"]
        used.append("a" if torch.equal(stacked[1:], first.embeds) else "b" if torch.equal(stacked[1:], later.embeds)
                    else "neither")
    assert used == ["a", "a", "b", "b", "b"]  # calls 1..5; call 0 was "a" from the start
    seen_steps = []
    real_encode = loaded.prompt_encoder.encode

    def spy(prompt, negative, steps, *args, **kwargs):
        seen_steps.append(steps)
        return real_encode(prompt, negative, steps, *args, **kwargs)

    loaded.prompt_encoder.encode = spy
    try:
        for sampler in ("Heun", "Euler", "Heun"):
            engine.generate(Txt2ImgRequest(prompt="[a red circle:a blue square:0.5]", sampler=sampler, seed=1, **SMALL))
        picture = Image.new("RGB", (64, 64), (10, 200, 30))
        result = engine.generate(Img2ImgRequest(prompt="[a red circle:a blue square:0.5]", seed=1, init_image=picture,
                                                denoising_strength=0.5, cfg_scale=1.0, **SMALL))
    finally:
        del loaded.prompt_encoder.encode
    assert seen_steps == [12, 6, 12, 6]
    assert result.images[0].size == (64, 64)


def test_conditioning_is_cached_across_batches_and_repeats(engine: Engine) -> None:
    loaded = engine.manager.get("tiny-sd1")
    before = loaded.prompt_encoder.encoded_texts
    request = Txt2ImgRequest(prompt="a (cached:1.2) prompt [x:y:2]", negative_prompt="blurry", seed=1, batch_count=2,
                             **SMALL)
    engine.generate(request)
    engine.generate(request.with_changes(seed=9))
    assert loaded.prompt_encoder.encoded_texts - before == 3  # two schedule texts and the negative, once
    engine.generate(request.with_changes(emphasis="No norm"))
    engine.generate(request.with_changes(clip_skip=2))
    assert loaded.prompt_encoder.encoded_texts - before == 9


def test_long_prompt_words_after_token_75_change_the_image(engine: Engine) -> None:
    words = ["red circle"] * 40  # 80 tokens
    base = engine.generate(Txt2ImgRequest(prompt=" ".join(words), seed=2, **SMALL)).images[0]
    changed = engine.generate(Txt2ImgRequest(prompt=" ".join(words[:-1] + ["blue square"]), seed=2, **SMALL)).images[0]
    assert np.abs(pixels(base) - pixels(changed)).max() > 0


def test_emphasis_and_clip_skip_reach_the_infotext(engine: Engine) -> None:
    result = engine.generate(Txt2ImgRequest(prompt="a (red:1.3) circle", emphasis="No norm", clip_skip=2, seed=1,
                                            **SMALL))
    assert "Clip skip: 2" in result.infotexts[0] and "Emphasis: No norm" in result.infotexts[0]
    plain = engine.generate(Txt2ImgRequest(prompt="a red circle", emphasis="No norm", seed=1, **SMALL))
    assert "Emphasis" not in plain.infotexts[0]  # A1111 writes it only when the prompt has brackets
    with pytest.raises(ValueError, match="emphasis"):
        engine.submit(Txt2ImgRequest(prompt="x", emphasis="Loud", **SMALL))


def test_trainer_samples_read_the_prompt_language(models_dir: Path, tmp_path: Path) -> None:
    from accelerate import Accelerator

    from app.engine.registry import ModelRegistry
    from app.training.config import TrainConfig
    from app.training.trainer import save_samples

    pipe = build_tiny_pipeline("sd1")
    registry = ModelRegistry(models_dir)

    def sample(prompt: str) -> np.ndarray:
        config = TrainConfig(base_model="tiny-sd1", dataset=tmp_path, output_name="samples", models_dir=models_dir,
                             outputs_dir=tmp_path, resolution=64, seed=0, sample_prompts=(prompt,))
        (path,) = save_samples(pipe, "sd1", registry, config, 1, Accelerator(cpu=True))
        return pixels(Image.open(path))

    edited = sample("[a red circle:a blue square:0]")
    assert np.array_equal(edited, sample("a blue square"))  # the edit is read, not drawn as brackets
    assert not np.array_equal(edited, sample("[a red circle:a blue square:0]".replace(":0]", ":99]")))


def test_lora_tags_inside_brackets_are_taken_out_before_parsing() -> None:
    from app.engine.prompts import split_lora_tags
    from app.engine.requests import LoraSpec

    text, loras = split_lora_tags("[a <lora:x:0.5>|b] (red <lora:y>:1.2) circle")
    assert text == "[a |b] (red :1.2) circle"
    assert loras == (LoraSpec("x", 0.5), LoraSpec("y", 1.0))


def test_saved_parameters_keep_an_a1111_prompt_byte_for_byte(engine: Engine, outputs_dir: Path) -> None:
    from app.engine.infotext import parse_infotext
    from app.engine.infotext_fields import request_from_infotext
    from app.engine.outputs import read_parameters

    prompt = "masterpiece, (detailed fur:1.2), [dog:cat:0.5] BREAK \\(literal\\), [fe|]male, ((sky)))"
    negative = "lowres, (worst quality:1.4), [blurry]"
    result = engine.generate(Txt2ImgRequest(prompt=prompt, negative_prompt=negative, emphasis="No norm", seed=3,
                                            width=64, height=64, steps=4))
    saved = read_parameters(result.paths[0])
    assert saved == result.infotexts[0]
    fields = parse_infotext(saved)
    assert fields["Prompt"] == prompt and fields["Negative prompt"] == negative and fields["Emphasis"] == "No norm"
    again = request_from_infotext(saved)
    assert (again.prompt, again.negative_prompt, again.emphasis) == (prompt, negative, "No norm")
