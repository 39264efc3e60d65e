"""The app in a real browser: headless Chromium clicks, drags and watches, like a visitor would.

Screenshots of every tab go to test-artifacts/ (git-ignored). `STUDIO_UPDATE_SCREENSHOT=1` also refreshes
docs/screenshot.png, the Generate tab shown in the README.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from studio.api import STYLIZE_METADATA_KEY, read_png_settings
from tests.browser.conftest import ARTIFACTS

pytestmark = pytest.mark.browser

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot.png"
GALLERY_IMAGES = "#generate-gallery img"


def _summary(page) -> str:
    return page.locator("#generate-info").inner_text()


def _first_image_src(page) -> str:
    return page.locator(GALLERY_IMAGES).first.get_attribute("src") or ""


def _wait_for_new_pictures(page, before: str) -> None:
    """Until the gallery shows a first picture from another file than `before`: a render has landed."""
    page.wait_for_function(
        "(before) => { const img = document.querySelector('#generate-gallery img');"
        " return img && img.getAttribute('src') !== before; }",
        arg=before,
    )


def _assert_no_error_toast(page) -> None:
    toasts = page.locator(".toast-message-item.error, .toast-title.error")
    assert toasts.count() == 0, toasts.all_inner_texts()
    assert not page.studio_errors, page.studio_errors


def _drag_slider(page, elem_id: str, fraction: float) -> None:
    """Press the mouse on the slider's thumb and drag it to `fraction` of the track (release fires on pointer up)."""
    track = page.locator(f"#{elem_id} input[type=range]")
    box = track.bounding_box()
    assert box is not None
    value = float(track.input_value())
    low, high = float(track.get_attribute("min")), float(track.get_attribute("max"))
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * (value - low) / (high - low), y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * fraction, y, steps=8)
    page.mouse.up()


def test_page_loads_with_artworks(page) -> None:
    page.wait_for_selector(GALLERY_IMAGES)  # generated on load
    assert page.title() == "GAN Art Studio"
    for tab in ("Generate", "Models"):
        assert page.get_by_role("tab", name=tab).is_visible()
    _assert_no_error_toast(page)


def test_generate_button_renders_the_seed_asked_for(page) -> None:
    page.locator("#seed input").fill("123")
    page.locator("#generate-button").click()
    page.wait_for_function("() => document.querySelector('#generate-info')?.innerText.includes('seeds 123, 124')")
    images = page.locator(GALLERY_IMAGES)
    assert images.count() == 8
    captions = page.locator("#generate-gallery").inner_text()
    assert "seed 123" in captions and "seed 130" in captions
    _assert_no_error_toast(page)
    page.mouse.move(5, 5)  # no hover highlight in the picture
    page.wait_for_timeout(300)  # let the thumbnails paint
    page.screenshot(path=str(ARTIFACTS / "generate.png"), full_page=True)
    if os.environ.get("STUDIO_UPDATE_SCREENSHOT") == "1":
        _save_docs_screenshot(page.screenshot(full_page=True))


def _save_docs_screenshot(png: bytes) -> None:
    """The README picture: a palette PNG keeps it well under 300 KB."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        DOCS_SCREENSHOT, optimize=True
    )
    assert DOCS_SCREENSHOT.stat().st_size < 300_000


def test_moving_the_truncation_slider_rerenders(page) -> None:
    before = _first_image_src(page)
    _drag_slider(page, "psi", 0.2)  # psi 1.0 -> 0.3
    _wait_for_new_pictures(page, before)
    # the pictures follow the slider as it moves: the last render is the one for where it stopped
    page.wait_for_function(
        "() => { const m = /ψ ([0-9.]+)/.exec(document.querySelector('#generate-info')?.innerText || '');"
        " return m && Number(m[1]) >= 0.2 && Number(m[1]) <= 0.4; }"
    )
    page.wait_for_timeout(1500)  # nothing renders after that
    psi = float(re.search(r"ψ ([0-9.]+)", _summary(page)).group(1))
    assert 0.2 <= psi <= 0.4
    assert "seeds 123" in _summary(page)  # same seeds, new truncation
    _assert_no_error_toast(page)


def test_moving_a_direction_slider_rerenders(page) -> None:
    before = _first_image_src(page)
    _drag_slider(page, "direction-1", 0.9)  # 0 -> about +4
    _wait_for_new_pictures(page, before)
    page.wait_for_function("() => document.querySelector('#generate-info')?.innerText.includes('directions 1:')")
    _assert_no_error_toast(page)


def test_arrow_keys_on_a_slider_rerender(page) -> None:
    before = _first_image_src(page)
    page.locator("#direction-2 input[type=range]").focus()
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")  # 0 -> -0.5 in steps of 0.25
    page.wait_for_function("() => document.querySelector('#generate-info')?.innerText.includes('2: -0.5')")
    assert _first_image_src(page) != before
    _assert_no_error_toast(page)


def test_on_a_phone_every_picture_fits_in_the_gallery(page) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        page.wait_for_timeout(500)
        gallery = page.locator("#generate-gallery").bounding_box()
        boxes = [image.bounding_box() for image in page.locator(GALLERY_IMAGES).all()]
        assert len(boxes) == 8 and gallery is not None
        assert all(box and box["x"] + box["width"] <= gallery["x"] + gallery["width"] + 1 for box in boxes), boxes
    finally:
        page.set_viewport_size({"width": 1280, "height": 1000})


def test_download_is_the_png_with_its_settings(page, tmp_path: Path) -> None:
    page.locator(GALLERY_IMAGES).nth(2).click()  # select the third picture (seed 125)
    page.keyboard.press("Escape")  # leave the preview if the gallery opened one
    page.locator("#download-png", has_text="PNG of seed 125").wait_for()  # the server has taken the click
    settings = read_png_settings(_download(page, "#download-png", tmp_path / "download.png"))
    assert settings.model == "omniart-eyes" and settings.seeds == (125,)
    assert 0.2 <= settings.psi <= 0.4 and settings.directions.get(0, 0) > 2


def _ticked_keyframes(page) -> list[str]:
    return [box.locator("xpath=..").inner_text().strip() for box in page.locator("#keyframes input:checked").all()]


def test_a_slider_move_keeps_the_ticked_seeds_and_the_picked_picture(page, tmp_path: Path) -> None:
    assert _ticked_keyframes(page) == ["123", "124", "125", "126"]  # the first four, ticked for the new seeds
    page.locator("#keyframes label", has_text="126").click()  # untick
    page.locator("#keyframes label", has_text="129").click()  # tick
    before = _first_image_src(page)
    page.locator("#direction-3 input[type=range]").focus()
    page.keyboard.press("ArrowRight")  # the same seeds, made again with direction 3 at +0.25
    page.wait_for_function("() => document.querySelector('#generate-info')?.innerText.includes('3: +0.25')")
    page.wait_for_timeout(500)
    assert _first_image_src(page) != before
    assert _ticked_keyframes(page) == ["123", "124", "125", "129"]
    assert page.locator("#download-png").inner_text().strip() == "⬇ PNG of seed 125, with settings"

    # seed 125, clicked in the test above, is still the one picked, now with the new direction. The button gets
    # the new file from a follow-up event just after the gallery, so on a busy machine the first click can be early.
    def downloaded_settings():
        return read_png_settings(_download(page, "#download-png", tmp_path / "download.png"))

    deadline = time.monotonic() + 20
    while (settings := downloaded_settings()).directions.get(2) != 0.25 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert settings.seeds == (125,) and settings.directions.get(2) == 0.25
    _assert_no_error_toast(page)


def _settled_scroll(page) -> float:
    """The page's scroll position once it has stood still for half a second (smooth scrolls, late layout)."""
    return page.evaluate(
        """() => new Promise((resolve) => {
            let last = window.scrollY, since = performance.now();
            const check = () => {
                if (window.scrollY !== last) { last = window.scrollY; since = performance.now(); }
                if (performance.now() - since >= 500) resolve(last); else requestAnimationFrame(check);
            };
            requestAnimationFrame(check);
        })"""
    )


def _download(page, selector: str, saved: Path) -> Path:
    with page.expect_download() as download:
        page.locator(selector).click()
    download.value.save_as(saved)
    return saved


def _set_number(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(value)
    box.press("Tab")


def test_send_to_stylize_and_stylize_an_example(page, tmp_path: Path) -> None:
    page.locator("#to-stylize").click()  # the selected artwork (seed 125) becomes the photo
    page.get_by_role("tab", name="Stylize", selected=True).wait_for()
    assert page.locator("#stylize-download").is_disabled()  # nothing to download before the first picture
    page.locator("#stylize-content img").wait_for()
    page.get_by_text("Try a pairing").wait_for()
    page.locator("#pairing-examples tr.tr-body").first.click()  # Chelsea the cat + Matisse
    page.wait_for_function(
        "() => (document.querySelector('#stylize-style-1 img')?.getAttribute('src') || '').includes('matisse')"
    )
    _set_number(page, "stylize-size", "96")
    _set_number(page, "stylize-steps", "5")
    outputs = Path(os.environ["STUDIO_OUTPUT_DIR"])
    before = set(outputs.glob("stylized-*.png"))
    page.locator("#stylize-button").dblclick()  # an impatient double click renders once
    page.wait_for_function(  # the finished picture's summary (a picture so far says "after 2 of 5 steps")
        "() => /5 steps[^]*carries these settings/.test(document.querySelector('#stylize-info')?.innerText)",
        timeout=120_000,
    )
    page.wait_for_timeout(3000)  # a second render of 5 steps at 96 px would have finished by now
    assert len(set(outputs.glob("stylized-*.png")) - before) == 1
    picture = page.locator("#stylized img")
    picture.wait_for()
    assert page.evaluate("() => document.querySelector('#stylized img').naturalWidth") == 96
    _assert_no_error_toast(page)
    page.screenshot(path=str(ARTIFACTS / "stylize.png"), full_page=True)
    with Image.open(_download(page, "#stylize-download", tmp_path / "stylized.png")) as downloaded:
        assert downloaded.size[0] == 96
        assert json.loads(downloaded.text[STYLIZE_METADATA_KEY])["method"] == "gatys"
    # live previews are AdaIN's: with Gatys chosen, letting go of the strength slider leaves picture and summary
    summary = page.locator("#stylize-info").inner_text()
    _drag_slider(page, "stylize-strength", 0.4)
    page.wait_for_timeout(1500)
    assert page.locator("#stylize-info").inner_text() == summary
    assert page.evaluate("() => document.querySelector('#stylized img').naturalWidth") == 96  # picture kept
    _assert_no_error_toast(page)


def _page_state(page) -> dict:
    """What the Stylize page shows, for a failure's message."""
    return page.evaluate(
        """() => ({
            method: document.querySelector('#stylize-method input:checked')?.value,
            summary: document.querySelector('#stylize-info')?.innerText,
            marks: [...document.querySelectorAll('.validation-error')].map((mark) => mark.innerText),
            toasts: [...document.querySelectorAll('.toast-body')].map((toast) => toast.innerText),
        })"""
    )


def test_adain_offline_is_refused_on_its_control_and_the_picture_stays(page) -> None:
    page.locator("#stylize-method").get_by_text("AdaIN: fast").click()
    page.wait_for_function("() => document.querySelector('#stylize-method input:checked')?.value === 'adain'")
    # The choice's live preview answers first (offline, it explains why there is none). gradio clears the marks on
    # every input of an event when that event starts, so a preview that started after the press (held back behind
    # an earlier one) would clear the refusal's mark.
    page.locator("#stylize-info", has_text="Live previews use AdaIN").wait_for()
    page.locator("#stylize-button").click()
    try:
        page.locator("#stylize-method").get_by_text("without AdaIN's weights").wait_for()
    except PlaywrightTimeoutError:  # CI once timed out here; say what the page showed instead
        page.screenshot(path=str(ARTIFACTS / "adain-refusal-missing.png"), full_page=True)
        raise AssertionError(f"no refusal on the method; the page shows {_page_state(page)}") from None
    assert page.evaluate("() => document.querySelector('#stylized img').naturalWidth") == 96  # still on show
    _assert_no_error_toast(page)
    page.locator("#stylize-method").get_by_text("Gatys: optimisation").click()


def test_on_a_phone_a_refused_value_is_scrolled_into_view_and_readable(page) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        page.locator("#stylize-method").get_by_text("AdaIN: fast").click()
        page.locator("#stylize-button").scroll_into_view_if_needed()
        method_top = page.locator("#stylize-method").evaluate("element => element.getBoundingClientRect().bottom")
        assert method_top < 0  # the control to change is above the screen when Stylize is pressed
        page.wait_for_timeout(600)  # a press within half a second of the last test's is dropped as a double click
        page.locator("#stylize-button").click()
        message = page.locator("#stylize-method .validation-error")
        message.wait_for()
        page.wait_for_function(
            "() => { const box = document.querySelector('#stylize-method').getBoundingClientRect();"
            " return box.top >= 0 && box.bottom <= window.innerHeight; }"
        )
        # The message is drawn above the control's label, so all of its words can be read.
        hit = message.evaluate(
            "element => { const box = element.getBoundingClientRect();"
            " const hit = document.elementFromPoint(box.left + 12, box.top + box.height / 2);"
            " return element.contains(hit); }"
        )
        assert hit
        assert "without AdaIN's weights" in message.inner_text()
        page.screenshot(path=ARTIFACTS / "phone-refused-value.png")
    finally:
        page.set_viewport_size({"width": 1280, "height": 1000})
        page.locator("#stylize-method").get_by_text("Gatys: optimisation").click()
    message.wait_for(state="detached")  # choosing another method dismisses the refusal's mark
    _assert_no_error_toast(page)


def test_a_refused_picture_in_a_closed_accordion_is_shown(page, tmp_path: Path) -> None:
    not_a_picture = tmp_path / "notes.png"
    not_a_picture.write_text("a shopping list, not a picture")
    header = page.locator("#stylize-blend > button.label-wrap")
    style_2 = page.locator("#stylize-style-2")
    header.click()
    style_2.locator("input[type=file]").set_input_files(str(not_a_picture))
    style_2.locator("img").wait_for(state="attached")  # uploaded (a broken picture on show)
    header.click()
    assert not style_2.is_visible()
    page.wait_for_timeout(600)  # a press within half a second of the last one is dropped as a double click
    page.locator("#stylize-button").click()
    mark = style_2.locator(".validation-error")
    mark.wait_for()  # visible: the accordion was opened for it
    assert "not a picture file" in mark.inner_text()
    page.wait_for_function(
        "() => { const box = document.querySelector('#stylize-style-2').getBoundingClientRect();"
        " return box.top >= 0 && box.bottom <= window.innerHeight; }"
    )
    page.screenshot(path=ARTIFACTS / "refused-picture-in-accordion.png")
    style_2.get_by_label("Clear").last.click()
    page.wait_for_function("() => !document.querySelector('#stylize-style-2 .validation-error')")
    header.click()
    _assert_no_error_toast(page)


def test_send_keyframes_and_play_a_short_walk(page) -> None:
    page.get_by_role("tab", name="Generate").click()
    direction = page.locator("#direction-2 input[type=number]")
    direction.fill("1.5")
    direction.press("Tab")  # the pictures follow; the walk will too
    page.wait_for_function("() => document.querySelector('#generate-info')?.innerText.includes('2: +1.5')")
    page.locator("#to-walk").click()  # the ticked seeds (ticked in an earlier test) become the walk's keyframes
    seeds = page.locator("#walk-seeds textarea, #walk-seeds input").first
    page.wait_for_function(
        "() => document.querySelector('#walk-seeds textarea, #walk-seeds input')?.value === '123, 124, 125, 129'"
    )
    assert seeds.input_value() == "123, 124, 125, 129"
    walk_direction = "document.querySelector('#walk-direction-2 input[type=number]')"
    page.wait_for_function(f"() => {walk_direction}?.value === '1.5'")
    frames = page.locator("#walk-frames input[type=number]")
    frames.fill("12")
    frames.press("Tab")
    page.locator("#walk-button").click()
    video = page.locator("#walk-video video")
    video.wait_for(timeout=90_000)
    page.wait_for_function("() => document.querySelector('#walk-info')?.innerText.includes('12 frames')")
    assert "2: +1.5" in page.locator("#walk-info").inner_text()
    # the browser decodes and plays it: enough data for the current frame, and the clock moves
    page.wait_for_function("() => document.querySelector('#walk-video video')?.readyState >= 2")
    page.evaluate("() => { const v = document.querySelector('#walk-video video'); v.muted = true; return v.play(); }")
    page.wait_for_function("() => document.querySelector('#walk-video video')?.currentTime > 0.1")
    assert page.evaluate("() => document.querySelector('#walk-video video').videoWidth") == 256
    _assert_no_error_toast(page)
    page.screenshot(path=str(ARTIFACTS / "walk.png"), full_page=True)


def test_stop_button_ends_a_long_walk(page) -> None:
    frames = page.locator("#walk-frames input[type=number]")
    frames.fill("600")
    frames.press("Tab")
    page.locator("#walk-button").click()
    page.wait_for_function("() => /Walk: [0-9]+ of 600/.test(document.body.innerText)", timeout=90_000)
    outputs = Path(os.environ["STUDIO_OUTPUT_DIR"])
    assert list(outputs.glob(".walk-*.part")), "the render should be writing its hidden partial file"
    page.locator("#walk-stop").click()
    page.wait_for_function("() => !/Walk: [0-9]+ of 600/.test(document.body.innerText)", timeout=30_000)
    # the server stopped too: the hidden partial file became the finished video of the frames made
    deadline = time.monotonic() + 30
    while list(outputs.glob(".walk-*.part")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list(outputs.glob(".walk-*.part"))
    # Read in the same moment as it is found: the run and the Stop both send this summary, and the second
    # re-renders it.
    info = page.wait_for_function(
        "() => { const text = document.querySelector('#walk-info')?.innerText || '';"
        " return /^Stopped after [^]* fps \\(/.test(text) && text; }"
    ).json_value()
    made = re.match(r"Stopped after (\d+) of 600 frames: the file holds those", info)
    seconds = re.search(r"(\d+) frames at ([0-9.]+) fps \(([0-9.]+) s\)", info)
    assert made and seconds, info
    assert seconds.group(1) == made.group(1) and 16 <= int(made.group(1)) < 600, info
    # the player shows that shorter video
    page.wait_for_function("() => document.querySelector('#walk-video video')?.readyState >= 1")
    duration = page.evaluate("() => document.querySelector('#walk-video video').duration")
    assert abs(duration - int(made.group(1)) / float(seconds.group(2))) < 0.1
    _assert_no_error_toast(page)
    frames.fill("12")
    frames.press("Tab")


def test_a_gif_walk_shows_in_an_image_box_instead_of_the_video_player(page) -> None:
    page.locator("#walk-format").get_by_text("gif", exact=True).click()
    page.locator("#walk-button").click()
    page.wait_for_function("() => document.querySelector('#walk-info')?.innerText.includes('GIF')", timeout=90_000)
    gif = page.locator("#walk-gif img")
    gif.wait_for()
    assert (gif.get_attribute("src") or "").endswith(".gif")
    assert not page.locator("#walk-video").is_visible()  # an empty player would sit above the GIF
    page.locator("#walk-format").get_by_text("mp4", exact=True).click()
    page.locator("#walk-button").click()
    page.locator("#walk-video video").wait_for(timeout=90_000)
    assert not page.locator("#walk-gif").is_visible()
    _assert_no_error_toast(page)


def test_a_refusal_on_the_seeds_follows_the_route(page) -> None:
    # A page of its own: on the shared page, events of the earlier tests happened to clear the mark anyway.
    fresh = page.context.new_page()
    try:
        fresh.set_default_timeout(60_000)
        fresh.goto(page.url)
        fresh.wait_for_selector(GALLERY_IMAGES)  # the page is up and has run its first event
        fresh.get_by_role("tab", name="Walk").click()
        seeds = fresh.locator("#walk-seeds textarea")
        assert "," in seeds.input_value()  # several keyframes
        marks = fresh.locator("#walk-seeds .validation-error")
        # choosing a noise loop with several seeds marks them at once, before Walk is pressed
        fresh.locator("#walk-route").get_by_text("noise loop around one seed").click()
        fresh.wait_for_function("() => !document.querySelector('#walk-spread input[type=range]').disabled")
        marks.filter(has_text="one seed").wait_for()
        # back on the route through the keyframes, the seeds are fine again and the mark goes
        fresh.locator("#walk-route").get_by_text("through the keyframes").click()
        marks.filter(has_text="one seed").wait_for(state="detached")
        assert marks.count() == 0
        # a refusal that holds on either route stays marked when the route changes
        seeds.fill("7, eight")
        seeds.press("Tab")
        fresh.locator("#walk-button").click()
        marks.filter(has_text="'eight' is not one").wait_for()
        fresh.locator("#walk-route").get_by_text("noise loop around one seed").click()
        fresh.wait_for_function("() => !document.querySelector('#walk-spread input[type=range]').disabled")
        fresh.wait_for_timeout(1000)  # the route's events have run
        assert "'eight' is not one" in " ".join(marks.all_inner_texts())
        assert fresh.locator("#walk-info").inner_text().strip() == ""  # nothing was rendered
    finally:
        fresh.close()
    _assert_no_error_toast(page)


def test_models_tab_lists_models_and_credits(page) -> None:
    page.get_by_role("tab", name="Models").click()
    table = page.locator("#models-table")
    table.wait_for()
    text = table.inner_text()
    for name in ("omniart-eyes", "vgg19-caffe", "wikiart-cubism", "adain-decoder"):
        assert name in text
    page.get_by_text("Credits and licences").click()
    page.get_by_text("Woman with a Hat").first.wait_for()
    _assert_no_error_toast(page)
    page.screenshot(path=str(ARTIFACTS / "models.png"), full_page=True)
    page.get_by_role("tab", name="Generate").click()


def test_a_failed_fetch_is_a_toast_and_the_models_table_stays(page) -> None:
    page.get_by_role("tab", name="Models").click()
    page.locator("#fetch-name input").fill("wikiart-cubism")
    page.keyboard.press("Enter")
    page.locator("#fetch-button").click()
    toast = page.locator(".toast-body").filter(
        has_text="wikiart-cubism is not cached, and the studio is offline (HF_HUB_OFFLINE set)"
    )
    toast.wait_for()
    assert "python -m studio weights fetch wikiart-cubism" in toast.inner_text()
    table = page.locator("#models-table")
    assert table.is_visible() and "omniart-eyes" in table.inner_text()  # not an "Error" panel
    assert "⛔ missing (offline)" in table.inner_text()
    page.locator(".toast-close").first.click()  # close the expected error so that later tests start clean
    page.wait_for_function("() => document.querySelectorAll('.toast-body').length === 0")
    page.get_by_role("tab", name="Generate").click()


def test_a_model_trained_while_the_app_runs_appears_in_the_menus_after_a_refresh(page) -> None:
    import torch

    from studio.models.dcgan import DCGANConfig, DCGANGenerator
    from studio.training.export import export_generator
    from studio.weights import local_weights_dir

    torch.manual_seed(0)
    generator = DCGANGenerator(DCGANConfig(z_dim=8, resolution=16, base_channels=8)).eval()
    export_generator(generator, out_dir=local_weights_dir() / "late-tints", name="late-tints")
    page.get_by_role("tab", name="Models").click()
    page.get_by_role("button", name="Refresh the list").click()
    page.locator("#models-table").get_by_text("late-tints").wait_for()
    page.get_by_role("tab", name="Generate").click()
    page.locator("#model input").click()
    option = page.get_by_role("option", name=re.compile(r"^late-tints\s+·\s+16 px\s+·\s+offline"))
    option.wait_for()
    page.keyboard.press("Escape")
    _assert_no_error_toast(page)


def test_choosing_another_class_rerenders_the_pictures(page) -> None:
    page.get_by_role("tab", name="Generate").click()
    before = _first_image_src(page)
    page.locator("#model input").click()
    page.get_by_role("option", name=re.compile(r"^omniart-eyes")).click()
    # Choosing a model loads it and then renders: wait for that render, or it could land during the next test
    # (its start clears the refusal marks on the Generate controls there).
    _wait_for_new_pictures(page, before)
    assert "omniart-eyes" in _summary(page)
    before = _first_image_src(page)
    page.locator("#class-name input").click()
    page.get_by_role("option", name="green", exact=True).click()
    page.wait_for_function("() => document.querySelector('#generate-info')?.innerText.includes('class green')")
    assert _first_image_src(page) != before
    _assert_no_error_toast(page)


def test_a_standing_refusal_does_not_pull_the_page_away_while_a_slider_moves(page) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    seed = page.locator("#seed input")
    kept = seed.input_value()
    try:
        seed.fill("-5")
        page.locator("#generate-button").click()
        page.locator("#seed .validation-error").first.wait_for(state="attached")
        _settled_scroll(page)  # the press's answer: the page may scroll the mark into view
        slider = page.locator("#direction-2")
        slider.scroll_into_view_if_needed()
        _settled_scroll(page)
        # Where the slider is on screen: the browser's scroll anchoring changes scrollY, not what is seen, when
        # something above it changes height (the seed's mark rebuilt).
        on_screen = slider.evaluate("element => element.getBoundingClientRect().top")
        assert page.locator("#seed").evaluate("element => element.getBoundingClientRect().bottom") < 0
        _drag_slider(page, "direction-2", 0.8)  # every move re-runs the validator, which marks the seed again
        page.wait_for_timeout(2000)
        _settled_scroll(page)
        assert abs(slider.evaluate("element => element.getBoundingClientRect().top") - on_screen) < 50
    finally:
        page.set_viewport_size({"width": 1280, "height": 1000})
        seed.fill(kept)
        seed.press("Enter")
    _assert_no_error_toast(page)
