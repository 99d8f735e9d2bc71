"""Dataset folders a person may train from through the server: only inside the allowed roots
(``--dataset-roots``), after symlinks and ``..`` are resolved."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.cli import build_parser, dataset_roots_from_args
from app.training.roots import DatasetFolderError, DatasetRoots, default_dataset_roots, parse_roots
from app.training.staging import staging_folder, staging_root


@pytest.fixture
def layout(tmp_path: Path) -> tuple[DatasetRoots, Path, Path]:
    """(roots: datasets/ beside models/ and the staging folder; a dataset inside; a folder outside)."""
    models, outputs = tmp_path / "models", tmp_path / "outputs"
    models.mkdir()
    inside = tmp_path / "datasets" / "dogs"
    inside.mkdir(parents=True)
    outside = tmp_path / "private"
    outside.mkdir()
    return DatasetRoots.for_server(models, outputs), inside, outside


def _refused(roots: DatasetRoots, folder: Path | str) -> str:
    with pytest.raises(DatasetFolderError) as caught:
        roots.check(folder)
    message = str(caught.value)
    assert all(str(root) in message for root in roots.roots), "the message must name the allowed folders"
    return message


def test_a_folder_inside_a_root_is_accepted(layout) -> None:
    roots, inside, _ = layout
    assert roots.check(inside) == inside.resolve()
    assert roots.check(str(inside) + os.sep) == inside.resolve()
    assert roots.check("dogs") == inside.resolve()  # a relative name: inside the first root
    nested = inside / "3_dogs"
    nested.mkdir()
    assert roots.check(nested) == nested.resolve()


def test_a_folder_outside_is_refused_with_the_roots_named(layout) -> None:
    roots, _, outside = layout
    assert "outside the folders this server may train from" in _refused(roots, outside)
    _refused(roots, "/etc")
    _refused(roots, outside.parent)  # the parent of a root is not inside it


def test_dotdot_climbing_out_of_a_root_is_refused(layout) -> None:
    roots, inside, outside = layout
    _refused(roots, inside / ".." / ".." / outside.name)
    _refused(roots, "../private")  # relative, from the first root
    assert roots.check(inside / ".." / "dogs") == inside.resolve()  # ".." that stays inside is fine


def test_a_symlink_inside_a_root_pointing_outside_is_refused(layout) -> None:
    roots, inside, outside = layout
    link = inside.parent / "innocent"
    link.symlink_to(outside, target_is_directory=True)
    _refused(roots, link)
    _refused(roots, link / ".")


def test_a_missing_folder_inside_a_root_names_the_roots_too(layout) -> None:
    roots, inside, outside = layout
    message = _refused(roots, inside.parent / "cats")
    assert "does not exist" in message
    # outside the roots, existing or not, the answer is the same: it tells nothing about the disk
    assert "outside" in _refused(roots, outside / "nothing-here")


def test_default_roots_are_datasets_beside_models_and_the_upload_staging(tmp_path: Path) -> None:
    models, outputs = tmp_path / "models", tmp_path / "outputs"
    assert default_dataset_roots(models, outputs) == (tmp_path / "datasets", outputs / "training" / "datasets")
    roots = DatasetRoots.for_server(models, outputs)
    assert roots.roots == ((tmp_path / "datasets").resolve(), (outputs / "training" / "datasets").resolve())
    assert not (tmp_path / "datasets").exists(), "the default root is not created"
    staged = staging_folder(outputs, "my-lora")
    staged.mkdir(parents=True)
    assert staged.parent == staging_root(outputs) and roots.check(staged) == staged.resolve()


def test_staging_names_cannot_leave_the_staging_folder(tmp_path: Path) -> None:
    assert staging_folder(tmp_path, "") == staging_root(tmp_path) / "dataset"
    for bad in ("../../home", "a/b", "..", "/etc"):
        with pytest.raises(ValueError):
            staging_folder(tmp_path, bad)


def test_the_dataset_roots_flag(tmp_path: Path) -> None:
    first, second = tmp_path / "shared data", tmp_path / "more"
    first.mkdir()
    second.mkdir()
    common = ["--models-dir", str(tmp_path / "models"), "--outputs-dir", str(tmp_path / "out")]
    assert "--dataset-roots" in build_parser().format_help()
    default = dataset_roots_from_args(build_parser().parse_args(common))
    assert default == DatasetRoots.for_server(tmp_path / "models", tmp_path / "out")
    args = build_parser().parse_args([*common, "--dataset-roots", f"{first}, {second},"])
    assert parse_roots(args.dataset_roots) == (first, second)
    roots = dataset_roots_from_args(args)  # the flag's folders replace datasets/; uploads stay allowed
    assert roots.roots == (first.resolve(), second.resolve(), (tmp_path / "out" / "training" / "datasets").resolve())
    with pytest.raises(ValueError, match="not a folder"):
        dataset_roots_from_args(build_parser().parse_args([*common, "--dataset-roots", str(tmp_path / "nope")]))


def test_the_training_service_of_the_server_applies_the_roots(tmp_path: Path) -> None:
    """app/cli.py's Training service refuses a folder outside its roots before anything is queued."""
    from types import SimpleNamespace

    from app.cli import training_service
    from app.training.config import TrainConfig
    from app.training.job import Training

    config = SimpleNamespace(models_dir=tmp_path / "models", outputs_dir=tmp_path / "outputs")
    engine = SimpleNamespace(config=config, registry=SimpleNamespace(find_checkpoint=lambda name: None),
                             submit_work=lambda *a, **k: pytest.fail("nothing may be queued"))
    service = training_service(engine)
    assert isinstance(service, Training) and service.dataset_roots == DatasetRoots.for_server(
        config.models_dir, config.outputs_dir)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    run = TrainConfig(base_model="tiny", dataset=outside, output_name="x", models_dir=config.models_dir,
                      outputs_dir=config.outputs_dir)
    with pytest.raises(DatasetFolderError, match="outside the folders"):
        service.submit_training(run)


def test_the_train_tab_shows_the_refusal(tmp_path: Path) -> None:
    """The Train tab's folder field goes through the same check and shows its message."""
    import gradio as gr
    from types import SimpleNamespace

    from app.training.job import Training
    from app.ui.train_tab import staged_dataset

    roots = DatasetRoots.for_server(tmp_path / "models", tmp_path / "outputs")
    engine = SimpleNamespace(config=SimpleNamespace(outputs_dir=tmp_path / "outputs"))
    training = Training(engine, dataset_roots=roots)  # type: ignore[arg-type]  # only its folder check is used
    inside = tmp_path / "datasets" / "cats"
    inside.mkdir(parents=True)
    assert staged_dataset(engine, training, "x", str(inside), None) == (inside.resolve(), [])
    with pytest.raises(gr.Error, match="outside the folders this server may train from") as caught:
        staged_dataset(engine, training, "x", str(tmp_path), None)
    assert str(roots.roots[0]) in str(caught.value)
    with pytest.raises(gr.Error, match="Name"):
        staged_dataset(engine, training, "../../x", "", [tmp_path / "a.png"])
