"""Looks of the synthetic frames: ``barn``, the style of the main job's data (pinned byte for byte by
tests/test_synth_golden.py), and ``shifted``, the related domain the pretraining set is rendered in.

The shifted style is the same task (pigs and cows, one box per visible animal) seen through another camera in
other barns: pasture-green, earth, rubber-mat and sand floors, brick, wood and painted walls with plank and tile
textures; harsher and coloured light (sodium, cold LED, green-tinted), more contrast and more night frames; other
breeds (black, red-brown and pied pigs; Jersey, Hereford, Charolais, grey and Holstein cows); leaner and stockier
bodies; a wider view with smaller animals spread over the whole frame, a weaker perspective and a tilted camera.
It plays the part COCO plays for the real contest: related, and not the test distribution.

Every field of :data:`BARN` holds the value the generator had before styles existed, and a style-only feature is
drawn only where its field asks for it, so the barn frames keep their random draws in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass

Colour = tuple[int, int, int]  # BGR


@dataclass(frozen=True)
class CowCoat:
    """A cow breed's coat: body colour, patch colour of patterned coats, and a face colour that differs."""

    base: Colour
    patch: Colour | None = None  # patterned (Holstein-like) coats: the patches' colour
    face: Colour | None = None  # a head of its own colour (Hereford's white face)

    @property
    def dark(self) -> bool:
        """Dark coats keep darker legs and muzzle; the pale patterned coat does not."""
        return self.patch is None


@dataclass(frozen=True)
class Style:
    """Every setting that differs between the barn and the shifted frames (see the module notes)."""

    name: str
    entropy: tuple[int, ...]  # appended to each image's seed words: barn appends none, so its streams are unchanged
    # ---- geometry (the geometry stream: boxes)
    pig_body_width: tuple[float, float] = (0.21, 0.28)  # half width of a pig's trunk, canonical units
    pig_patch_share: float = 0.3  # pigs with dark markings
    cow_trunk: tuple[float, float] = (0.17, 0.21)  # half height of a cow's trunk
    cow_legs: tuple[float, float] = (0.3, 0.36)
    cow_squash: tuple[float, float] = (0.3, 1.08)  # side-view shortening (turned towards / away)
    cow_tilt_deg: float = 5.0  # camera roll as seen on the cows
    side_pig_tilt_deg: float = 4.0  # pigs lying across the 1280x960 side-view pens
    size_factor: tuple[float, float] | None = None  # per-image animal size factor, log-uniform; None: 1
    size_slope: float = 1.0  # factor on the calibrated perspective (nearer is bigger)
    spread_positions: float = 0.0  # share of a uniform spread mixed into the calibrated box-centre quantiles
    # ---- looks (the look stream: pixels only)
    cow_floors: tuple[Colour, ...] = ((118, 146, 168), (92, 134, 168), (126, 130, 134), (70, 84, 100))
    cow_walls: tuple[Colour, ...] = ((170, 175, 180), (150, 165, 180), (120, 130, 140))
    pig_floors: tuple[Colour, ...] = ((128, 132, 134), (108, 114, 120), (140, 142, 140), (96, 108, 122))
    pig_walls: tuple[Colour, ...] = ((185, 188, 190), (160, 170, 175), (140, 150, 160))
    floor_gain: tuple[float, float] = (0.8, 1.15)
    blotches: tuple[float, float] = (0.04, 0.12)  # amplitude of large brightness blotches on the floor
    grain: tuple[float, float] = (0.05, 0.11)  # amplitude of fine floor grain
    textures: bool = False  # planks, tiles and grass tufts over floor and walls
    metal: Colour = (150, 150, 145)  # fences, feeders
    partition: Colour = (175, 178, 180)  # pig pen partitions
    pig_coats: tuple[Colour, ...] = ((160, 172, 228), (178, 188, 236), (150, 178, 214), (196, 204, 228),
                                     (140, 160, 200), (170, 182, 222))  # pinks, beige, pale, dirty
    cow_coats: tuple[tuple[CowCoat, float], ...] = (
        (CowCoat((226, 228, 232), patch=(34, 34, 38)), 0.35),  # Holstein
        (CowCoat((52, 92, 156)), 0.4),  # brown
        (CowCoat((38, 62, 112)), 0.15),  # dark brown
        (CowCoat((38, 38, 42)), 0.1),  # black
    )
    light_tilt: float = 0.25  # largest brightness slope across the frame
    vignette: float = 0.35  # largest darkening of the corners
    exposure: tuple[float, float] = (0.75, 1.15)
    heat_lamp_share: float = 0.35  # pig frames with a warm heat lamp
    colour_casts: tuple[tuple[float, float, float], ...] = ()  # BGR gains, one drawn per frame; () for none
    contrast: tuple[float, float] | None = None  # contrast factor about the frame's mean; None: unchanged
    night_share: float = 0.12  # infrared (grey) frames


BARN = Style(name="barn", entropy=())

SHIFTED = Style(
    name="shifted",
    entropy=(0x5EED, 1),
    pig_body_width=(0.17, 0.33),
    pig_patch_share=0.55,
    cow_trunk=(0.14, 0.25),
    cow_legs=(0.24, 0.42),
    cow_squash=(0.22, 1.15),
    cow_tilt_deg=12.0,
    side_pig_tilt_deg=20.0,
    size_factor=(0.5, 1.3),
    size_slope=0.5,
    spread_positions=0.5,
    # pasture green, red-brown earth, black rubber mat, pale sand; and the same for the pig pens
    cow_floors=((70, 140, 96), (60, 96, 140), (46, 48, 52), (150, 190, 210)),
    cow_walls=((60, 70, 150), (70, 110, 150), (160, 120, 80), (90, 92, 96)),  # brick, wood, painted blue, grey
    pig_floors=((80, 130, 100), (64, 100, 150), (52, 54, 58), (160, 196, 214)),
    pig_walls=((66, 80, 160), (80, 120, 160), (170, 140, 100), (200, 210, 220)),
    floor_gain=(0.6, 1.2),
    blotches=(0.08, 0.22),
    grain=(0.1, 0.2),
    textures=True,
    metal=(60, 90, 130),  # wooden rails
    partition=(50, 80, 120),
    pig_coats=((40, 40, 46), (50, 82, 150), (60, 100, 170), (170, 180, 232), (205, 210, 220), (90, 110, 150)),
    cow_coats=(
        (CowCoat((226, 228, 232), patch=(34, 34, 38)), 0.15),  # Holstein
        (CowCoat((90, 150, 200)), 0.25),  # Jersey fawn
        (CowCoat((40, 60, 130), face=(225, 228, 232)), 0.25),  # Hereford: red-brown, white face
        (CowCoat((200, 215, 225)), 0.15),  # Charolais cream
        (CowCoat((120, 120, 125)), 0.2),  # grey
    ),
    light_tilt=0.45,
    vignette=0.6,
    exposure=(0.5, 1.35),
    heat_lamp_share=0.15,
    colour_casts=((0.7, 0.95, 1.25), (1.25, 1.05, 0.8), (0.9, 1.2, 0.9), (1.0, 1.0, 1.0)),  # sodium, LED, green, none
    contrast=(0.6, 1.5),
    night_share=0.25,
)

STYLES: dict[str, Style] = {s.name: s for s in (BARN, SHIFTED)}


def get_style(style: str | Style) -> Style:
    """The :class:`Style` named ``style`` (``barn`` or ``shifted``), or ``style`` itself."""
    if isinstance(style, Style):
        return style
    if style not in STYLES:
        raise ValueError(f"unknown synthetic style {style!r}; choose one of {', '.join(STYLES)}")
    return STYLES[style]
