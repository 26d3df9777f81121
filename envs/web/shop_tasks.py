"""Multi-turn tasks on the shop: what to buy and where to send it, graded on the order placed.

Each task is a function of a seeded ``random.Random`` that returns a :class:`Goal` (the seed picks
the product, the quantities and the address, so the same seed asks the same thing). An episode
ends when an order is placed; the reward is 1 when that order is exactly the goal (the products
and quantities, every address field, the shipping method, the gift wrap) and 0 otherwise, and
the step's info lists what differed. The order is read from the shop's own state, never from the
page.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import msgspec

from .shop import SHIPPING, Address, Order, Product, catalog, money


class Goal(msgspec.Struct, frozen=True):
    instruction: str
    items: dict[str, int]
    address: Address
    shipping: str = "standard"
    gift_wrap: bool = False
    start_cart: dict[str, int] = {}
    """What the cart holds when the episode starts."""


ADDRESSES = (
    Address("Ada Lovelace", "12 Analytical Way", "London", "NW1 2AB", "United Kingdom"),
    Address("Grace Hopper", "77 Compiler Street", "Arlington", "22201", "United States"),
    Address("Alan Turing", "3 Enigma Road", "Toronto", "M5V 2T6", "Canada"),
    Address("Emmy Noether", "5 Invariant Platz", "Berlin", "10115", "Germany"),
    Address("Kurt Goedel", "9 Incompleteness Lane", "Amsterdam", "1011 AB", "Netherlands"),
)


def _where(a: Address) -> str:
    return f"{a.name}, {a.street}, {a.city} {a.postal_code}, {a.country}"


def _of(category: str, color: str | None = None) -> list[Product]:
    return [p for p in catalog().values() if p.category == category and color in (None, p.color)]


def cheapest_mug(rng: random.Random) -> Goal:
    color, limit = rng.choice((("red", 1000), ("blue", 1000), ("black", 1000)))
    mug = min((p for p in _of("mugs", color) if p.price_cents < limit), key=lambda p: p.price_cents)
    address = rng.choice(ADDRESSES)
    return Goal(
        f"Buy one of the cheapest {color} mug that costs less than {money(limit)}, with standard shipping and no "
        f"gift wrap, delivered to: {_where(address)}.",
        {mug.sku: 1},
        address,
    )


def two_products(rng: random.Random) -> Goal:
    notebook, pen = rng.choice(_of("notebooks")), rng.choice(_of("pens"))
    n_notebooks, n_pens = rng.randint(2, 3), rng.randint(2, 4)
    address = rng.choice(ADDRESSES)
    return Goal(
        f"Buy {n_notebooks} of the {notebook.name} and {n_pens} of the {pen.name}, with standard shipping and no "
        f"gift wrap, delivered to: {_where(address)}.",
        {notebook.sku: n_notebooks, pen.sku: n_pens},
        address,
    )


def express_gift(rng: random.Random) -> Goal:
    product = rng.choice(_of("lamps") + _of("bags"))
    address = rng.choice(ADDRESSES)
    return Goal(
        f"Send one {product.name} as a present: express shipping and gift wrap, delivered to: {_where(address)}.",
        {product.sku: 1},
        address,
        shipping="express",
        gift_wrap=True,
    )


def fix_cart(rng: random.Random) -> Goal:
    keep, *others = rng.sample(sorted(catalog()), 3)
    wanted = rng.randint(2, 3)
    address = rng.choice(ADDRESSES)
    return Goal(
        f"Your cart already holds some products. Buy only the {catalog()[keep].name}, exactly {wanted} of it "
        f"(remove everything else), with standard shipping and no gift wrap, delivered to: {_where(address)}.",
        {keep: wanted},
        address,
        start_cart={others[0]: 1, keep: 1, others[1]: 2},
    )


def recycled_notebook(rng: random.Random) -> Goal:
    (notebook,) = (p for p in _of("notebooks") if "recycled" in p.description)
    address = rng.choice(ADDRESSES)
    return Goal(
        f"Buy one notebook made of recycled paper, with standard shipping and no gift wrap, delivered to: "
        f"{_where(address)}.",
        {notebook.sku: 1},
        address,
    )


TASKS: dict[str, Callable[[random.Random], Goal]] = {
    "shop-cheapest-mug": cheapest_mug,
    "shop-two-products": two_products,
    "shop-express-gift": express_gift,
    "shop-fix-cart": fix_cart,
    "shop-recycled-notebook": recycled_notebook,
}


def goal(task: str, seed: int) -> Goal:
    return TASKS[task](random.Random(f"{task}/{seed}"))


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def grade(goal: Goal, order: Order) -> list[str]:
    """What differs between ``order`` and ``goal``; empty when the order is right."""
    wrong = []
    if order.items != goal.items:
        have = ", ".join(f"{n} x {sku}" for sku, n in order.items.items())
        want = ", ".join(f"{n} x {sku}" for sku, n in goal.items.items())
        wrong.append(f"items: {have} (wanted {want})")
    for field in Address.__struct_fields__:
        have, want = getattr(order.address, field), getattr(goal.address, field)
        if not _same(have, want):
            wrong.append(f"{field}: {have!r} (wanted {want!r})")
    if order.shipping != goal.shipping:
        wrong.append(f"shipping: {SHIPPING[order.shipping][0]} (wanted {SHIPPING[goal.shipping][0]})")
    if order.gift_wrap != goal.gift_wrap:
        wrong.append(f"gift wrap: {'yes' if order.gift_wrap else 'no'} (wanted {'yes' if goal.gift_wrap else 'no'})")
    return wrong
