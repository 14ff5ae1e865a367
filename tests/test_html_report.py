"""report.html: a self-contained page about a run folder, built from whatever files the folder holds.

The unit tests build run folders by hand (a distilled file, a log, a report in the shapes evaluation writes);
the browser test opens the page in headless Chromium and checks what a reader sees: every image decoded, no
console error, a page that is not blank, and row labels beside the rows they name.
"""

import contextlib
import io
import json
import math
import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from latentdistill.errors import LatentDistillError
from latentdistill.export import FORMAT_VERSION, DistilledSet, save_grid, write_distilled
from latentdistill.reports import write_html_report
from latentdistill.reports.charts import loss_curve_svg, nice_step, thinned, use_log_scale

CLASSES = ["airplane", "cat", "<b>ship & co</b>"]  # the last one must come out escaped, never as markup
IPC = 2
IMG = '<img src="data:image/png;base64,'


def _summary(values: list[float]) -> dict:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return {"mean": round(mean, 2), "std": round(std, 2), "runs": values}


def classification_report() -> dict:
    """The shape ``ClassificationTask.evaluate`` writes (outputs/datm_cifar10_ipc1_cpu/report.json), two networks."""
    def row(values):
        return {**_summary(values), "validation": _summary([v - 1 for v in values])}

    networks = {net: {"distilled": row([36.0 + shift, 37.5 + shift, 35.9 + shift]),
                      "random_real": row([16.4, 17.1, 15.2]), "distilled_soft": row([39.1, 38.2, 40.0]),
                      "random_real_soft": row([19.9, 22.0, 18.1]), "full": row([84.0, 84.5, 83.7]),
                      "scores": {"label_robust": {"score": 0.31, "hard_label_recovery": 0.2}}}
                for net, shift in (("convnet", 0.0), ("alexnet", -5.0))}
    storage = {"per_class": {name: 2088 for name in CLASSES},
               "parts": {"labels": 16.0, "latents": 2048.0, "soft_labels": 40.0},
               "mean_bytes_per_class": 2088.0, "image_bytes": 768, "image_equivalent": 2.72,
               "counted": ["latents", "soft_labels"], "not_counted": "hard labels, decoded images"}
    return {"distilled_file": "/runs/x/distilled.safetensors", "dataset": "tinyset", "ipc": IPC,
            "protocol": {"nets": ["convnet", "alexnet"], "epochs": 300, "lr": 0.01, "labels": "soft", "zca": None},
            "storage": storage, "notes": ["ZCA refitted on <data> (fingerprint abc)"], "random_real_ipc": IPC,
            "minutes": 3.5, "networks": networks}


def sr_report() -> dict:
    """The shape ``SuperResolutionTask.evaluate`` writes."""
    def metrics(psnr):
        return {"psnr": _summary(psnr), "ssim": _summary([0.91, 0.92, 0.915])}

    results = {name: {"set5": metrics([base, base + 0.2, base - 0.1]),
                      "bsd100": metrics([base - 3, base - 2.9, base - 3.2])}
               for name, base in (("distilled", 35.1), ("full", 35.6), ("random", 34.8), ("pruned", 34.9))}
    results["bicubic"] = {test: {"psnr": _summary([v, v]), "ssim": _summary([0.9, 0.9])}
                          for test, v in (("set5", 33.7), ("bsd100", 29.6))}
    return {"task": "sr", "scale": 2, "net": "espcn",
            "patches": {"distilled": 120, "full": 1200, "random": 120, "pruned": 120},
            "budget": 0.1, "protocol": {"iterations": 3000, "loss": "L1"}, "minutes": 2.0, "reused_baselines": [],
            "results": results}


def tiny_set(seed: int = 0) -> DistilledSet:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(CLASSES)).repeat_interleave(IPC)
    images = (torch.rand(len(labels), 3, 16, 16, generator=generator) * 255).to(torch.uint8)
    metadata = {"format_version": FORMAT_VERSION, "task": "classification", "classes": CLASSES, "dataset": "tinyset",
                "ipc": IPC, "distill_minutes": 1.5, "distill_iterations": 300, "prior": {"name": "vae"},
                "autoencoder": {"kind": "taesd", "variant": "taesd", "name_or_path": "weights/taesd"},
                "versions": {"python": "3.11.7", "torch": "2.13.0+cpu"}}
    return DistilledSet(torch.randn(len(labels), 4, 2, 2, generator=generator), labels, images, None, metadata)


def make_run_folder(folder: Path) -> Path:
    """Every file a finished, evaluated run with snapshots can hold: one snapshot as a PNG, one as a set only."""
    folder.mkdir(parents=True, exist_ok=True)
    distilled = tiny_set()
    write_distilled(folder / "distilled.safetensors", distilled)
    save_grid(tiny_set(1).images, distilled.labels, folder / "grid_start.png")
    save_grid(distilled.images, distilled.labels, folder / "grid.png")
    save_grid(tiny_set(2).images, distilled.labels, folder / "snapshots" / "iteration-000100.png")
    write_distilled(folder / "snapshots" / "iteration-000200.safetensors", tiny_set(3))
    # a loss over more than two decades: the chart switches to a log scale
    log = [{"iteration": i, "loss": 50 * math.exp(-i / 40) + 0.01 * (i % 3), "seconds": 0.5} for i in range(1, 301)]
    (folder / "distill_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in log))
    config = {"task": "classification", "distill": {"objective": "mtt", "ipc": IPC},
              "data": {"root": "../data/tinyset"}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "report.json").write_text(json.dumps(classification_report(), indent=2))
    return folder


def one_line_error(folder: Path, name: str) -> str:
    with pytest.raises(LatentDistillError) as caught:
        write_html_report(folder)
    message = str(caught.value)
    assert "\n" not in message and name in message, message
    assert not (folder / "report.html").exists()
    return message


def test_a_full_run_folder_gives_one_self_contained_page(tmp_path):
    folder = make_run_folder(tmp_path / "run")
    path = write_html_report(folder)
    assert path == folder / "report.html"
    page = path.read_text()
    assert page.count(IMG) == 4  # starting set, final set, the snapshot PNG, the snapshot drawn from its set
    assert page.count("<svg") == 2 and "<polyline" in page and "log scale" in page  # loss curve; accuracy bars
    for name in ("airplane", "cat", "&lt;b&gt;ship &amp; co&lt;/b&gt;", "convnet", "alexnet", "full training set",
                 "random real, teacher labels", "36.47 ± 0.90", "label-robust", "2088 bytes per class", "objective",
                 "mtt", "ZCA refitted on &lt;data&gt;", "tinyset", "taesd", "2.13.0+cpu", "iteration 100",
                 "iteration 200", "<pre>"):
        assert name in page, name
    assert "<b>ship" not in page and "<data>" not in page
    assert page.index("iteration 100") < page.index("iteration 200")
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    assert write_html_report(folder).read_text() == page  # the same folder gives the same page


def test_a_report_only_folder_works_and_says_what_is_absent(tmp_path):
    folder = tmp_path / "evaluation-1"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(classification_report()))
    page = write_html_report(folder).read_text()
    assert IMG not in page and page.count("<svg") == 1  # accuracy bars only
    assert "no distill_log.jsonl in this folder" in page and "no config.yaml in this folder" in page
    assert "absent from this folder: config.yaml, distill_log.jsonl, distilled.safetensors, grid.png" in page
    assert "every one of the 3 classes: 2088 bytes" in page


def test_an_empty_folder_gives_a_page_of_absences(tmp_path):
    page = write_html_report(tmp_path).read_text()
    assert "no report.json in this folder" in page and "no snapshots in this folder" in page and IMG not in page


def test_a_super_resolution_report_shows_psnr_bars_per_test_set(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(sr_report()))
    page = write_html_report(tmp_path).read_text()
    assert page.count("<svg") == 1 and "PSNR (dB, Y)" in page
    for text in ("set5", "bsd100", "pruned (120 patches)", "bicubic", "35.13 ± 0.15 / 0.9200",
                 "10.0% of the training patches", "unnamed protocol"):  # a report from before protocols had names
        assert text in page, text
    # the protocol is named above the figures, with what it is for; the set's own row says what it is
    report = sr_report()
    report["protocol"] = {"name": "quick", "note": "CPU smoke protocol", "iterations": 3000}
    report["labels"] = {"distilled": "distilled (400 matching steps)"}
    (tmp_path / "report.json").write_text(json.dumps(report))
    page = write_html_report(tmp_path).read_text()
    assert "<strong>quick protocol</strong>: CPU smoke protocol" in page
    assert "distilled (400 matching steps) (120 patches)" in page


def test_grid_png_and_a_log_cut_short_are_read_as_they_are(tmp_path):
    folder = make_run_folder(tmp_path / "run")
    (folder / "distilled.safetensors").unlink()  # the final grid then comes from grid.png
    with open(folder / "distill_log.jsonl", "a") as log:
        log.write('{"iteration": 301, "lo')  # a run killed mid-line
    page = write_html_report(folder).read_text()
    assert page.count(IMG) == 4 and "final set (grid.png)" in page
    assert "1 line(s) of distill_log.jsonl skipped" in page and "300 iterations" in page


def test_large_and_unlabelled_sets_are_sampled_and_say_so(tmp_path):
    many = tiny_set()
    many.labels = torch.arange(len(CLASSES)).repeat_interleave(12)
    many.images = torch.zeros(len(many.labels), 3, 8, 8, dtype=torch.uint8)
    many.latents = torch.zeros(len(many.labels), 4, 1, 1)
    write_distilled(tmp_path / "distilled.safetensors", many)
    page = write_html_report(tmp_path).read_text()
    assert page.count(IMG) == 1 and "showing 10 of up to 12 images per class" in page
    # super-resolution: pseudo-classes are no names to show, so a sample of the patches, unlabelled
    metadata = {"format_version": FORMAT_VERSION, "task": "sr", "classes": [f"cluster {i}" for i in range(5)]}
    patches = torch.zeros(100, 3, 24, 24, dtype=torch.uint8)
    write_distilled(tmp_path / "distilled.safetensors",
                    DistilledSet(torch.zeros(100, 4, 3, 3), torch.arange(100) % 5, patches, None, metadata))
    page = write_html_report(tmp_path).read_text()
    assert page.count(IMG) == 1 and "showing the first 64 of 100 images" in page
    assert '<ol class="row-labels">' not in page


@pytest.mark.parametrize("name, damage", [
    ("report.json", lambda path: path.write_text('{"networks": {"convnet": ')),
    ("report.json", lambda path: path.write_text(json.dumps({"networks": {"convnet": {"distilled": {"mean": "a"}}}}))),
    ("report.json", lambda path: path.write_text("[1, 2]")),
    ("distilled.safetensors", lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])),
    ("iteration-000200.safetensors", lambda path: path.write_bytes(b"\0" * 20)),
    ("grid_start.png", lambda path: path.write_bytes(path.read_bytes()[:60])),
    ("config.yaml", lambda path: path.write_text("distill: [unclosed")),
    ("distill_log.jsonl", lambda path: path.write_text("not json\nnor this\n")),
])
def test_a_damaged_file_is_a_one_line_error_naming_it(tmp_path, name, damage):
    folder = make_run_folder(tmp_path / "run")
    damage(next(folder.rglob(name)))
    one_line_error(folder, name)


def test_a_path_that_is_not_a_folder_is_refused(tmp_path):
    one_line_error(tmp_path / "missing", "missing")


def test_chart_helpers():
    assert use_log_scale([0.01, 5.0]) and not use_log_scale([0.5, 1.0]) and not use_log_scale([0.0, 100.0])
    points = [(float(i), float(i)) for i in range(4000)]
    assert len(thinned(points)) <= 1501 and thinned(points)[-1] == points[-1] and thinned(points[:10]) == points[:10]
    assert nice_step(50) == 10 and nice_step(4) == 1 and nice_step(0.7) == 0.2
    for points in ([(1, 0.5)], [(1, 2.0), (2, 2.0)], [(i, -float(i)) for i in range(60)]):  # one point, flat, negative
        svg = loss_curve_svg(points)
        assert svg.startswith("<svg") and "nan" not in svg.lower() and "inf" not in svg.lower()


# --- in a real browser ------------------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@contextlib.contextmanager
def deadline(seconds: int):
    """Stop a browser that hangs instead of the test run: SIGALRM raises in the test's thread."""
    def expire(signum, frame):
        raise TimeoutError(f"the browser took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def browser(monkeypatch):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (apt-get install chromium chromium-driver)")
    monkeypatch.setenv("SE_OFFLINE", "true")  # belt and braces: Selenium Manager never downloads anything
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with deadline(120):
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # the driver by path: no download
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(30)
        try:
            yield driver
        finally:
            driver.quit()


# Each figure's row labels, and whether each label's middle lies within the image row it names.
ROWS_ALIGNED = """
return Array.from(document.querySelectorAll('figure.grid')).map(figure => {
  const img = figure.querySelector('img').getBoundingClientRect();
  const labels = Array.from(figure.querySelectorAll('.row-labels li'));
  return labels.map((label, i) => {
    const box = label.getBoundingClientRect(), middle = (box.top + box.bottom) / 2;
    return middle > img.top + i * img.height / labels.length && middle < img.top + (i + 1) * img.height / labels.length;
  });
});
"""


def test_the_page_renders_in_headless_chromium(tmp_path, browser):
    path = write_html_report(make_run_folder(tmp_path / "run"))
    browser.get(path.resolve().as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete && i.naturalWidth > 0, i.naturalWidth, i.alt]);")
    assert len(images) == 4 and all(ok for ok, _, _ in images), images
    charts = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg')).map(s => s.getBoundingClientRect().width);")
    assert len(charts) == 2 and all(width > 100 for width in charts), charts
    aligned = browser.execute_script(ROWS_ALIGNED)
    assert len(aligned) == 4 and all(row == [True] * len(CLASSES) for row in aligned), aligned
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe
    screenshot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    colours = screenshot.getcolors(maxcolors=1 << 20) or []
    assert screenshot.size[0] > 0 and len(colours) > 50, f"a nearly blank page: {len(colours)} colours"
