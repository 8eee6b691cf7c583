"""Synthetic phone screenshots for the demo and the benchmarks: a home screen, a Settings list and the
Wi-Fi page, drawn with Pillow at any resolution (no binary files in the repository). They look like a
phone to a person reading the trace; to a random-weight demo model they are just pixels."""

from __future__ import annotations

from pathlib import Path

_APPS = [("Settings", (96, 125, 139)), ("Camera", (33, 33, 33)), ("Messages", (67, 160, 71)),
         ("Maps", (30, 136, 229)), ("Music", (233, 30, 99)), ("Clock", (255, 152, 0)),
         ("Photos", (142, 36, 170)), ("Mail", (229, 57, 53)), ("Calendar", (0, 137, 123))]
_SETTINGS = ["Wi-Fi", "Bluetooth", "Mobile network", "Display", "Sound", "Battery", "Apps", "About phone"]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _status_bar(draw, w: int, u: int) -> None:
    draw.rectangle([0, 0, w, 3 * u], fill=(250, 250, 250))
    draw.text((2 * u, u // 2), "12:30", fill=(20, 20, 20), font=_font(2 * u))
    draw.rectangle([w - 6 * u, u, w - 2 * u, 2 * u], outline=(20, 20, 20), width=max(1, u // 5))


def home_screen(width: int, height: int):
    from PIL import Image, ImageDraw

    u = max(4, width // 54)  # layout unit: 20 px on a 1080-wide screen
    img = Image.new("RGB", (width, height), (198, 219, 239))
    d = ImageDraw.Draw(img)
    _status_bar(d, width, u)
    cell = width // 3
    for i, (name, colour) in enumerate(_APPS):
        cx, cy = cell * (i % 3) + cell // 2, 12 * u + (i // 3) * 12 * u
        d.rounded_rectangle([cx - 3 * u, cy - 3 * u, cx + 3 * u, cy + 3 * u], radius=u, fill=colour)
        d.text((cx, cy + 4 * u), name, fill=(20, 20, 20), font=_font(int(1.6 * u)), anchor="mt")
    return img


def settings_screen(width: int, height: int, wifi_on: bool = False):
    from PIL import Image, ImageDraw

    u = max(4, width // 54)
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    _status_bar(d, width, u)
    d.text((2 * u, 5 * u), "Settings", fill=(20, 20, 20), font=_font(3 * u))
    for i, row in enumerate(_SETTINGS):
        y = 11 * u + i * 6 * u
        d.line([2 * u, y + 5 * u, width - 2 * u, y + 5 * u], fill=(225, 225, 225), width=max(1, u // 8))
        d.text((2 * u, y + u), row, fill=(20, 20, 20), font=_font(2 * u))
        if row == "Wi-Fi":
            x0 = width - 8 * u
            d.rounded_rectangle([x0, y + u, x0 + 5 * u, y + 3 * u], radius=u,
                                fill=(30, 136, 229) if wifi_on else (189, 189, 189))
            knob = x0 + 3 * u if wifi_on else x0
            d.ellipse([knob, y + u, knob + 2 * u, y + 3 * u], fill=(255, 255, 255))
    return img


def write_demo_screens(directory: str | Path, width: int = 540, height: int = 1200) -> list[Path]:
    """home, Settings (Wi-Fi off), Settings (Wi-Fi on) as 0.png, 1.png, 2.png in `directory`."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate([home_screen(width, height), settings_screen(width, height),
                             settings_screen(width, height, wifi_on=True)]):
        p = out / f"{i}.png"
        img.save(p)
        paths.append(p)
    return paths
