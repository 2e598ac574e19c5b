"""The documentation site in ``docs/``: Sphinx builds it with warnings as errors, every public name has one API
page showing its arguments, the README stays short and links into the site, no timing figure lives outside
``benchmarks/RESULTS*.md``, and the index and a monitor page render in headless Chromium.

The build (about half a minute on 2 cores) happens once per session, into a temporary folder.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from spectral_testing.chromium import chromium, require_chromium

from lightning_spectral._internal.public_api import PUBLIC_PACKAGES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

PACKAGES = list(PUBLIC_PACKAGES)


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The site built by ``sphinx-build -W --keep-going`` (as in ``.ci/run``), in a temporary folder."""
    try:
        import furo  # noqa: F401
        import myst_parser  # noqa: F401
        import sphinx  # noqa: F401
    except ImportError as error:
        if os.environ.get("CI"):
            pytest.fail(f"the docs extra is not installed ({error}); .ci/run installs .[dev,docs]")
        pytest.skip(f"the docs extra is not installed ({error}): pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("docs_html")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
        + ["-d", str(out / ".doctrees"), str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=ROOT,
    )
    assert process.returncode == 0, f"sphinx-build failed:\n{process.stderr[-8000:]}"
    return out


def exporters(package: str, name: str) -> list[str]:
    """The public packages that export the same object as ``package.name``."""
    obj = getattr(importlib.import_module(package), name)
    found = []
    for other in PACKAGES:
        module = importlib.import_module(other)
        if name in module.__all__ and getattr(module, name) is obj:
            found.append(other)
    return found


def signature_parameters(obj) -> list[str]:
    """The named parameters a rendered signature shows (``self`` and ``*args``/``**kwargs`` left out)."""
    if not callable(obj) or (inspect.isclass(obj) and issubclass(obj, BaseException)):
        return []
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in signature.parameters.values() if p.kind not in variadic and p.name != "self"]


@pytest.mark.slow
@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_has_one_api_page_with_its_arguments(site, package):
    module = importlib.import_module(package)
    assert module.__all__, package
    package_page = (site / "api" / f"{package}.html").read_text(encoding="utf-8")
    problems = []
    for name in module.__all__:
        pages = [(home, site / "api" / f"{home}.{name}.html") for home in exporters(package, name)]
        pages = [(home, page) for home, page in pages if page.exists()]
        if len(pages) != 1:
            problems.append(f"{package}.{name}: {len(pages)} API pages ({[str(p.name) for _, p in pages]})")
            continue
        home, page = pages[0]
        html = page.read_text(encoding="utf-8")
        if f'id="{home}.{name}"' not in html:  # autodoc failed to import or document it
            problems.append(f"{home}.{name}: the page does not document the object")
            continue
        missing = [
            p
            for p in signature_parameters(getattr(module, name))
            if f'<span class="n"><span class="pre">{p}</span></span>' not in html
        ]
        if missing:
            problems.append(f"{home}.{name}: the signature lacks {missing}")
        if f'href="{home}.{name}.html' not in package_page and home != package:
            problems.append(f"{package}: its page does not link to {home}.{name}")
        if home == package and f'href="#{home}.{name}"' not in html:
            problems.append(f"{home}.{name}: no permalink on its page")
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def logged_keys(tmp_path_factory) -> set[str]:
    """Every key the three monitors log in a short real fit with every optional metric on."""
    import pytorch_lightning as pl
    from spectral_testing.models import TinyClassifier, trainer_kwargs

    from lightning_spectral.callbacks import HessianEigenMonitor, NTKTraceMonitor, WeightSpectrumMonitor

    monitors = [
        WeightSpectrumMonitor(
            every_n_steps=2,
            k=3,
            compute_condition_number=True,
            alpha=("plain", "farms", "weightwatcher"),
            compute_rank_measures=True,
            interlayer_alignment=True,
        ),
        HessianEigenMonitor(every_n_steps=2, k=2, num_batches=2, compute_trace=True, compute_density=True),
        NTKTraceMonitor(
            every_n_steps=2,
            compute_alignment=True,
            compute_lambda_max=True,
            compute_spectrum=True,
            loss_scale=1.0,  # the MSE scale sgd_stability compares with (TinyClassifier trains cross-entropy)
        ),
    ]
    trainer = pl.Trainer(
        callbacks=monitors, **trainer_kwargs(tmp_path_factory.mktemp("keys"), max_epochs=1, max_steps=4)
    )
    trainer.fit(TinyClassifier())
    return {key for key in trainer.callback_metrics if key.startswith("spectral/")}


@pytest.mark.slow
def test_the_monitor_pages_carry_their_math_and_every_metric_key(site, logged_keys):
    """Each monitor page renders display math (``$$`` blocks) and names every metric its monitor logged in a
    real fit with every optional metric on (``lambda_2`` counts as ``lambda_1 .. lambda_k``)."""
    shared = re.sub(r"<[^>]+>", "", (site / "monitors.html").read_text(encoding="utf-8"))
    missing = []
    for monitor, page in (
        ("weights", "weight-spectrum-monitor"),
        ("hessian", "hessian-eigen-monitor"),
        ("ntk", "ntk-trace-monitor"),
    ):
        html = (site / f"{page}.html").read_text(encoding="utf-8")
        assert html.count('<div class="math notranslate nohighlight">') >= 3, page
        text = re.sub(r"<[^>]+>", "", html) + shared
        keys = sorted(key for key in logged_keys if key.startswith(f"spectral/{monitor}/"))
        assert len(keys) >= 5, (monitor, keys)
        for key in keys:
            parts = key.split("/")[2:]
            metric = parts[0] if parts[0] == "alignment" else parts[-1]  # alignment/<a>-><b>
            metric = re.sub(r"_\d+$", "_1", metric)
            if metric not in text:
                missing.append(f"{page}: {key}")
    assert missing == []


def test_readme_is_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if "://" not in link]
    assert any(link.startswith("docs/") and link.endswith(".md") for link in local)
    assert [link for link in local if not (ROOT / link).exists()] == []


# a number with a unit of time ("90 s", "8.4 ms", "2 minutes"; not "2s" in a formula)
TIMING = re.compile(
    r"\b\d+(?:[.,]\d+)?(?:\s?(?:ms|µs|us|sec|seconds?|min|minutes?|hours?)|\s[sh])\b(?![-/(])"
)


def test_no_timing_figure_outside_the_benchmark_results():
    """Measured times live in ``benchmarks/RESULTS*.md`` only (the docs' benchmarks pages include them)."""
    assert [
        m.group(0) for m in TIMING.finditer("about 90 s, 8.4 ms, 2 minutes; 5 %, 3 steps, m − 2s probes")
    ] == [
        "90 s",
        "8.4 ms",
        "2 minutes",
    ]  # the pattern sees timing figures and nothing else
    found = []
    for path in [
        ROOT / "README.md",
        ROOT / "examples" / "README.md",
        *DOCS.glob("*.md"),
        *DOCS.glob("*.rst"),
    ]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith(("```{include}", "python ", "$ ")):
                continue
            for match in TIMING.finditer(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {match.group(0)!r} in {line.strip()[:100]}")
    assert found == []


@pytest.mark.slow
@pytest.mark.parametrize("page", ["index.html", "hessian-eigen-monitor.html"])
def test_the_site_renders_in_headless_chromium(site, page, tmp_path):
    import matplotlib.image

    require_chromium()
    screenshot = tmp_path / "page.png"
    assert chromium(site / page, screenshot, tmp_path / "profile", size=(1200, 1600)) == []
    pixels = matplotlib.image.imread(screenshot)
    assert pixels.shape[:2] == (1600, 1200)
    colours = np.unique(pixels[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, code and a figure, not a blank page
    # the left third (the navigation) and the right two thirds (the text) both carry content
    for part in (pixels[:, :400, :3], pixels[:, 400:, :3]):
        assert (part.std(axis=(0, 1)) > 0.02).all()
