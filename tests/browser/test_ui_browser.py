"""The ``/ui`` page in a real browser: Debian's Chromium, driven by Playwright.

One person's path through the page, checked at both ends: the key, a model and a
second one to compare, an uploaded photo, a mask stroke, the price, the run. The fake
provider must receive the photo and a mask of the photo's size whose transparent
pixels are where the stroke went; the page must show the results and their cost.
Screenshots of each state go to ``tests/artifacts/ui`` (git-ignored); ``docs/ui.png``
is one of them, shrunk by hand for the README.
"""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from PIL import Image, ImageDraw
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.conftest import AiohttpServer, StartProxy
from tests.fakes.openai import FakeOpenAI, Reply
from tests.fakes.sse import StreamPlan
from tests.gateway import KEY_A, key_entry
from tests.images import png

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "ui"
# Chromium as root needs --no-sandbox; the rest keeps it off the network and quiet.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHOTO_W, PHOTO_H = 256, 192
BRUSH_PX = 20  # the size slider's value: the brush's diameter in display pixels


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: run scripts/system-deps", pytrace=False)
    return path


def picture(color: tuple[int, int, int], w: int = PHOTO_W, h: int = PHOTO_H) -> bytes:
    """A small PNG with something to look at: a sky, a ground and a sun."""
    img = Image.new("RGB", (w, h), color)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, h * 2 // 3, w, h), fill=(70, 120, 60))
    draw.ellipse((w * 3 // 5, h // 8, w * 4 // 5, h * 3 // 8), fill=(250, 210, 60))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _fake(
    aiohttp_server: AiohttpServer,
    tint: tuple[int, int, int],
    gate: asyncio.Event | None = None,
) -> FakeOpenAI:
    fake = FakeOpenAI("sk-upstream-test")
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("/v1"))  # type: ignore[attr-defined]
    partial = b64(picture((200, 200, 200)))
    fake.streams.append(
        StreamPlan(
            partials=2, pictures=(partial, partial, b64(picture(tint))), gate=gate
        )
    )
    return fake


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    path = chromium()
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def paint_stroke(
    page: Page, y_frac: float, x0_frac: float, x1_frac: float
) -> tuple[float, float, float, float]:
    """Drags the brush across the mask; returns the stroke in photo pixels and its radius."""
    # The mouse acts in the viewport: bring the canvas into it first.
    await page.locator("#mask").scroll_into_view_if_needed()
    box = await page.locator("#mask").bounding_box()
    assert box is not None
    scale = PHOTO_W / box["width"]
    y = box["y"] + box["height"] * y_frac
    x0 = box["x"] + box["width"] * x0_frac
    x1 = box["x"] + box["width"] * x1_frac
    await page.mouse.move(x0, y)
    await page.mouse.down()
    for i in range(1, 11):
        await page.mouse.move(x0 + (x1 - x0) * i / 10, y)
    await page.mouse.up()
    return (
        (x0 - box["x"]) * scale,
        (x1 - box["x"]) * scale,
        (y - box["y"]) * scale,
        BRUSH_PX / 2 * scale,
    )


async def test_a_person_paints_a_mask_and_compares_two_models(
    start_proxy: StartProxy, aiohttp_server: AiohttpServer, browser: Browser
) -> None:
    # The first provider's stream waits after its first partial image, so the page
    # can be seen mid-run.
    midway = asyncio.Event()
    first = await _fake(aiohttp_server, (90, 150, 230), gate=midway)
    second = await _fake(aiohttp_server, (230, 140, 90))
    proxy: TestServer = await start_proxy(
        {
            "openai": {"base_url": first.url},  # type: ignore[attr-defined]
            "backup": {"type": "openai", "base_url": second.url},  # type: ignore[attr-defined]
        },
        keys={"team-a": key_entry(KEY_A, budget_usd_day=5, rpm=100, concurrency=4)},
    )
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The first model-list probe without a key is refused (401) by design: the page
    # learns from it that the gateway wants a key. Any other console error counts.
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and "status of 401" not in m.text
            else None
        ),
    )

    await page.goto(str(proxy.make_url("/ui")))
    # With client keys configured, nothing but the key form shows without a key.
    await expect(page.locator("#key-status")).to_contain_text("Enter your client key")
    await expect(page.locator("#app")).to_be_hidden()
    await shot(page, "01-no-key")

    await page.get_by_label("Client key").fill(KEY_A)
    await page.get_by_role("button", name="Use key").click()
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#usage-note")).to_contain_text("Key 'team-a'")
    # The key stays in the tab's session storage, never in the address.
    assert KEY_A not in page.url
    await page.get_by_label("Model", exact=True).select_option("openai/gpt-image-2")
    await page.get_by_label("Compare with (optional)").select_option(
        "backup/gpt-image-2"
    )
    await expect(page.locator("#model-caps")).to_contain_text("streams partial images")
    await shot(page, "02-key-entered")
    # Every control has a name a screen reader can say.
    unlabelled = await page.evaluate(
        """[...document.querySelectorAll('input, select, textarea, button')]
        .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                       && !(e.tagName === 'BUTTON' && e.textContent.trim()))
        .map((e) => e.id || e.name || e.outerHTML)"""
    )
    assert unlabelled == []

    photo = picture((120, 170, 220))
    await page.get_by_label("Add images from files").set_input_files(
        {"name": "photo.png", "mimeType": "image/png", "buffer": photo}
    )
    await expect(page.locator("#mask-box")).to_be_visible()
    await page.wait_for_function(f"document.getElementById('mask').width === {PHOTO_W}")
    await page.locator("#brush-size").evaluate(f"e => {{ e.value = '{BRUSH_PX}'; }}")
    x0, x1, y, radius = await paint_stroke(page, 0.4, 0.25, 0.6)
    await page.get_by_label("Prompt").fill("put a red kite in the sky")
    await expect(page.locator("#price")).to_contain_text(
        "openai/gpt-image-2: estimate $"
    )
    await expect(page.locator("#price")).to_contain_text(
        "backup/gpt-image-2: estimate $"
    )
    await shot(page, "03-mask-painted")

    await page.get_by_role("button", name="Run").click()
    await expect(page.locator("#results-a .partial img")).to_be_visible()
    await expect(page.locator("#results-a progress")).to_be_visible()
    await expect(page.locator("#progress")).to_be_visible()
    await shot(page, "04-streaming")
    midway.set()
    cost_a = page.locator("#results-a .cost")
    cost_b = page.locator("#results-b .cost")
    await expect(cost_a).to_have_text("$0.030370")
    await expect(cost_b).to_have_text("$0.030370")
    await expect(page.locator("#results-a figure img")).to_have_count(1)
    await expect(page.locator("#results-b figure img")).to_have_count(1)
    async with page.expect_download() as downloading:
        await page.locator("#results-a a[download]").click()
    download = await downloading.value
    assert download.suggested_filename == "imagegate-openai-gpt-image-2-1.png"
    saved = await download.path()
    with Image.open(saved) as result:
        assert result.size == (PHOTO_W, PHOTO_H)
    await expect(page.locator("#results-a dl")).to_contain_text("openai")
    await expect(page.locator("#results-b dl")).to_contain_text("backup")
    # The spend table shows what the two runs cost.
    await expect(page.locator("#u-day")).to_have_text("$0.0607")
    await shot(page, "05-results")

    await page.set_viewport_size({"width": 360, "height": 800})
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page scrolls sideways at 360 px ({width} px wide)"
    await shot(page, "06-narrow-360")
    assert not errors, errors

    for fake in (first, second):
        rec = fake.last
        images = [f for f in rec.files if f.name.startswith("image")]
        masks = [f for f in rec.files if f.name == "mask"]
        assert [f.data for f in images] == [photo]
        assert len(masks) == 1, [(f.name, f.filename, len(f.data)) for f in rec.files]
        assert rec.fields.get("stream") == ["true"]
        _check_mask(masks[0].data, x0, x1, y, radius)


def _check_mask(data: bytes, x0: float, x1: float, y: float, radius: float) -> None:
    """Transparent exactly around the stroke: OpenAI's mask convention, photo-sized."""
    mask = Image.open(io.BytesIO(data))
    assert mask.size == (PHOTO_W, PHOTO_H)
    alpha = mask.convert("RGBA").getchannel("A")
    for frac in (0.0, 0.5, 1.0):
        assert alpha.getpixel((round(x0 + (x1 - x0) * frac), round(y))) == 0
    for corner in (
        (0, 0),
        (PHOTO_W - 1, 0),
        (0, PHOTO_H - 1),
        (PHOTO_W - 1, PHOTO_H - 1),
    ):
        assert alpha.getpixel(corner) == 255
    # Every pixel that lets the edit through lies within the brush of the stroke.
    clear = alpha.point(lambda a: 255 if a < 128 else 0).getbbox()
    assert clear is not None
    left, top, right, bottom = clear
    slack = radius + 2
    assert left >= x0 - slack
    assert right <= x1 + slack
    assert top >= y - slack
    assert bottom <= y + slack


async def _upload(proxy: TestServer, data: bytes) -> str:
    form = aiohttp.FormData()
    form.add_field("purpose", "vision")
    form.add_field("file", data, filename="lamp.png", content_type="image/png")
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.make_url("/v3/upload"), data=form) as r,
    ):
        assert r.status == 200
        file_id: str = (await r.json())["file_id"]
        return file_id


async def test_keyless_keyboard_mask_file_id_and_errors(
    start_proxy: StartProxy, aiohttp_server: AiohttpServer, browser: Browser
) -> None:
    """Without client keys: the page's own POSTs pass the origin check; a mask painted
    from the keyboard; a previous upload by file_id (the JSON body); an error shown as
    the API's message with the field it names."""
    fake = await _fake(aiohttp_server, (90, 150, 230))
    proxy = await start_proxy({"openai": {"base_url": fake.url}})  # type: ignore[attr-defined]
    lamp_id = await _upload(proxy, png(16, 16, seed=7))
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(str(proxy.make_url("/ui")))
    await expect(page.locator("#key-status")).to_contain_text("needs no client key")
    await expect(page.locator("#usage-note")).to_contain_text("nothing is tracked")

    await page.get_by_label("Model", exact=True).select_option("openai/gpt-image-2")
    photo = picture((120, 170, 220))
    await page.get_by_label("Add images from files").set_input_files(
        {"name": "photo.png", "mimeType": "image/png", "buffer": photo}
    )
    await page.wait_for_function(f"document.getElementById('mask').width === {PHOTO_W}")
    # Keyboard painting: the brush starts at the centre; Space held while moving.
    await page.locator("#brush-size").evaluate(f"e => {{ e.value = '{BRUSH_PX}'; }}")
    await page.locator("#mask").focus()
    await page.keyboard.down(" ")
    for _ in range(3):
        await page.keyboard.press("ArrowRight")
    await page.keyboard.up(" ")
    await page.get_by_label("Prompt").fill("a lamp on the table")

    # The provider refuses: the page shows the API's message and the field it names.
    fake.script(
        Reply(
            status=400,
            body={"error": {"message": "Invalid value for size.", "param": "size",
                            "type": "invalid_request_error", "code": "invalid_value"}},
        )
    )  # fmt: skip
    await page.get_by_role("button", name="Run").click()
    error = page.locator("#results-a [role=alert]")
    await expect(error).to_contain_text("Invalid value for size.")
    await expect(error).to_contain_text("(field: size)")
    await shot(page, "10-keyless-error")

    await page.get_by_label("Or a previous upload's file_id").fill(lamp_id)
    await page.get_by_role("button", name="Add file_id").click()
    await page.get_by_role("button", name="Run").click()
    await expect(page.locator("#results-a .cost")).to_have_text("$0.030370")
    await shot(page, "11-keyless-result")

    # The gateway sends OpenAI JSON with data URLs here: the page's photo, the stored
    # upload resolved from its file_id, and the mask.
    body = fake.last.json
    assert body is not None
    assert [_data_url(i["image_url"]) for i in body["images"]] == [
        photo,
        png(16, 16, seed=7),
    ]
    mask_png = _data_url(body["mask"]["image_url"])
    scale = (
        PHOTO_W / (await page.locator("#mask").bounding_box() or {"width": 1})["width"]
    )
    step = 8 * scale
    centre_x, centre_y = PHOTO_W / 2, PHOTO_H / 2
    _check_mask(mask_png, centre_x, centre_x + 3 * step, centre_y, BRUSH_PX / 2 * scale)


def _data_url(url: str) -> bytes:
    head, _, data = url.partition(",")
    assert head == "data:image/png;base64"
    return base64.b64decode(data)
