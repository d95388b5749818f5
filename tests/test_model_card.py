"""The run's model card: no machine paths, the encoder weights named by kind, pictures, per-class and test figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from helpers import FAST, make_shapes_dataset
from torchvision.models import mobilenet_v2

import mobileseg
from mobileseg.engine.model_card import dataset_label
from mobileseg.models.weights import ENV_VAR, describe_encoder_weights

TINY = {**FAST, "width_mult": 0.35}
TEST_SECTION = re.compile(r"<!-- mobileseg:test [^>]*-->\n.*?<!-- /mobileseg:test [^>]*-->\n?", re.S)


def machine_paths(text: str, *roots: Path) -> list[str]:
    """Absolute paths, ``../`` paths and the test's own folders found in ``text``."""
    found = [str(r) for r in roots if str(r) in text or str(r.resolve()) in text]
    found += re.findall(r"(?<![\w.])/(?:tmp|home|root|Users|var|work)\b\S*", text)
    found += re.findall(r"\.\./\S*", text)
    return found


def linked(text: str) -> list[str]:
    """Targets of the markdown links and images in ``text``."""
    return re.findall(r"\]\(([^)]+)\)", text)


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory, one_thread_module):
    root = tmp_path_factory.mktemp("card")
    data = make_shapes_dataset(root / "shapes", n=20)
    return mobileseg.train(data=str(data), epochs=1, project=str(root / "runs"), **TINY), root


@pytest.fixture(scope="module")
def one_thread_module():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def encoder_file(tmp_path: Path) -> Path:
    """A torchvision-layout MobileNetV2 state dict at the width the tiny runs use."""
    path = tmp_path / "elsewhere" / "my_mnv2.pt"
    path.parent.mkdir()
    torch.save(mobilenet_v2(weights=None, width_mult=0.35).state_dict(), path)
    return path


def test_card_has_no_machine_path_and_links_existing_pictures(binary_run):
    result, root = binary_run
    card = (result.save_dir / "README.md").read_text()
    assert machine_paths(card, root, Path.cwd(), Path.home()) == []
    assert "Encoder weights: none (trained from scratch)" in card
    assert "Data: shapes," in card  # the dataset by name, not by path
    assert "mobileseg test weights=weights/best.pt" in card and "from_checkpoint('weights/best.pt')" in card
    targets = linked(card)
    for name in ("results.png", "val_predictions.png", "train_batch.png", "labels.png"):
        assert name in targets, name
    for target in targets:
        assert (result.save_dir / target).is_file(), target
    assert "Per class" not in card  # binary: the headline is the foreground class


def test_test_metrics_section_matches_report_and_is_replaced(binary_run):
    result, root = binary_run
    card_path = result.save_dir / "README.md"
    before = card_path.read_text()
    first = mobileseg.test(weights=str(result.best), project=str(root / "runs"), workers=0, verbose=False)
    card = card_path.read_text()
    assert card.startswith(before.rstrip("\n"))  # the training part is kept as it was
    sections = TEST_SECTION.findall(card)
    assert len(sections) == 1
    section = sections[0]
    assert "## Test metrics (best.pt)" in section
    report = json.loads((Path(first["save_dir"]) / "metrics.json").read_text())
    assert f"| iou | {report['metrics']['iou']:.4f} |" in section
    assert f"on {report['images']} test images" in section
    for target in linked(section):  # relative links from the card's folder to the report pictures
        assert not Path(target).is_absolute() and (card_path.parent / target).is_file(), target
    assert {Path(t).name for t in linked(section)} == {"predictions.png", "worst.png", "confusion_matrix.png"}

    second = mobileseg.test(weights=str(result.best), project=str(root / "runs"), workers=0, verbose=False)
    assert second["save_dir"] != first["save_dir"]
    card = card_path.read_text()
    assert len(TEST_SECTION.findall(card)) == 1 and card.count("## Test metrics") == 1
    assert Path(second["save_dir"]).name in TEST_SECTION.findall(card)[0]  # links follow the latest report
    outside = TEST_SECTION.sub("", card)
    assert machine_paths(outside, root, Path.cwd(), Path.home()) == []


def test_weights_outside_a_run_folder_leave_cards_alone(binary_run, tmp_path):
    result, root = binary_run
    loose = tmp_path / "best.pt"
    loose.write_bytes(result.best.read_bytes())
    (tmp_path / "README.md").write_text("# my project\n")
    mobileseg.test(weights=str(loose), project=str(tmp_path / "runs"), workers=0, verbose=False)
    assert (tmp_path / "README.md").read_text() == "# my project\n"


def test_card_names_a_local_encoder_file_by_name(tmp_path, encoder_file, one_thread):
    data = make_shapes_dataset(tmp_path / "shapes", n=8)
    opts = {**TINY, "encoder_weights": str(encoder_file)}
    result = mobileseg.train(data=str(data), epochs=1, project=str(tmp_path / "runs"), **opts)
    card = (result.save_dir / "README.md").read_text()
    assert re.search(r"Encoder weights: a local file: my_mnv2\.pt \(sha256 [0-9a-f]{12}\)", card)
    assert machine_paths(card, tmp_path, Path.cwd(), Path.home()) == []


def test_card_credits_the_environment_override_not_imagenet(tmp_path, encoder_file, monkeypatch, one_thread):
    monkeypatch.setenv(ENV_VAR, str(encoder_file))
    data = make_shapes_dataset(tmp_path / "shapes", n=8)
    opts = {**TINY, "encoder_weights": "imagenet"}
    result = mobileseg.train(data=str(data), epochs=1, project=str(tmp_path / "runs"), **opts)
    card = (result.save_dir / "README.md").read_text()
    assert f"Encoder weights: from ${ENV_VAR}: my_mnv2.pt" in card
    assert "torchvision MobileNet_V2 IMAGENET1K_V1" not in card
    assert machine_paths(card, tmp_path, Path.cwd(), Path.home()) == []


def test_encoder_weights_kinds(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert describe_encoder_weights("imagenet") == "ImageNet (torchvision MobileNet_V2 IMAGENET1K_V1)"
    assert describe_encoder_weights(None) == describe_encoder_weights("none") == "none (trained from scratch)"
    assert describe_encoder_weights(tmp_path / "gone.pt") == "a local file: gone.pt"  # unreadable: the name alone


def test_dataset_label_drops_the_folder_path():
    assert dataset_label("/data/sets/camvid/data.yaml") == "camvid/data.yaml"
    assert dataset_label("/data/sets/shapes") == "shapes"
    assert dataset_label("preset camvid on /data/sets/CamVid") == "preset camvid (folder CamVid)"
    assert dataset_label("bundled pets sample") == "bundled pets sample"


def test_multiclass_card_has_per_class_tables(tmp_path, one_thread):
    data = make_shapes_dataset(tmp_path / "shapes3", n=20, classes=3)
    (data / "data.yaml").write_text("names: [background, red box, green box]\n")
    result = mobileseg.train(data=str(data), epochs=1, project=str(tmp_path / "runs"), **TINY)
    card_path = result.save_dir / "README.md"
    names = yaml.safe_load((result.save_dir / "args.yaml").read_text())["dataset_info"]["names"]
    assert names == ["background", "red box", "green box"]
    card = card_path.read_text()
    table = card[card.index("Per class") : card.index("## Pictures")]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == names
    ious = [float(r.split("|")[2]) for r in rows if r.split("|")[2].strip() != "-"]
    assert sum(ious) / len(ious) == pytest.approx(result.best_metrics["iou"], abs=1e-3)  # the best epoch's mIoU

    out = mobileseg.test(weights=str(result.best), project=str(tmp_path / "runs"), workers=0, verbose=False)
    section = TEST_SECTION.findall(card_path.read_text())[0]
    per_class = json.loads((Path(out["save_dir"]) / "metrics.json").read_text())["per_class"]
    for name in names:
        iou = per_class[name]["iou"]
        assert re.search(rf"\| {name} \| {'-' if iou != iou else f'{iou:.4f}'} \|", section), name
