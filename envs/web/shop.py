"""A small shop, shipped with the environment: home, search, categories, product pages, a cart and a
checkout form. Plain server-rendered HTML (forms and links, no scripts), so every step an agent
takes is a real page load or form post, and the state an episode is graded on (the cart, the
orders) lives here, in Python, where the page cannot touch it.

One :class:`Shop` per episode; the server's threads call :meth:`Shop.handle`, the environment
reads :meth:`Shop.snapshot`; a lock keeps the two apart.
"""

from __future__ import annotations

import html
import json
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import quote, urlencode

import msgspec

NAME = "Corner Shop"
MAX_QUANTITY = 20
"""Of one product in the cart."""
MAX_LINES = 20
"""Different products in the cart."""
MAX_FIELD_CHARS = 200
"""Of one checkout field."""
COUNTRIES = ("United States", "Canada", "United Kingdom", "Germany", "France", "Netherlands", "Japan", "Australia")
SHIPPING = {"standard": ("Standard", 400), "express": ("Express", 1200)}
"""Shipping method: (label, price in cents)."""
ADDRESS_FIELDS = (("name", "Full name"), ("street", "Street address"), ("city", "City"), ("postal_code", "Postal code"))


class Product(msgspec.Struct, frozen=True):
    sku: str
    name: str
    category: str
    color: str
    price_cents: int
    description: str


class Address(msgspec.Struct, frozen=True):
    name: str
    street: str
    city: str
    postal_code: str
    country: str


class Order(msgspec.Struct, frozen=True):
    number: int
    items: dict[str, int]
    address: Address
    shipping: str
    gift_wrap: bool
    total_cents: int


class ShopState(msgspec.Struct, frozen=True):
    cart: dict[str, int]
    orders: tuple[Order, ...]


@cache
def catalog() -> dict[str, Product]:
    rows = json.loads(Path(__file__).with_name("catalog.json").read_text())
    return {row["sku"]: msgspec.convert(row, Product) for row in rows}


def money(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}"


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    location: str | None = None

    @classmethod
    def page(cls, status: int, title: str, body: str, cart_count: int = 0) -> Reply:
        return cls(status, _layout(title, body, cart_count).encode())

    @classmethod
    def redirect(cls, location: str) -> Reply:
        return cls(303, b"", "text/plain", location)


_STYLE = """
body { font-family: sans-serif; margin: 0; color: #222; }
header { display: flex; gap: 16px; align-items: center; padding: 10px 16px; background: #2d4a6b; }
header a { color: #fff; font-weight: bold; text-decoration: none; }
main { padding: 8px 16px; max-width: 900px; }
.price { font-weight: bold; }
.notice { background: #e7f3e7; padding: 6px; } .error { background: #f8e1e1; padding: 6px; }
table { border-collapse: collapse; } td, th { padding: 4px 10px; text-align: left; }
form.inline { display: inline; }
"""


def _layout(title: str, body: str, cart_count: int) -> str:
    e = html.escape
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)} - {NAME}</title>"
        f"<style>{_STYLE}</style></head><body><header><a href='/'>{NAME}</a>"
        "<form action='/search' role='search'><input name='q' aria-label='Search products' "
        "placeholder='Search products'> <button>Search</button></form>"
        f"<a href='/cart'>Cart ({cart_count})</a></header><main>{body}</main></body></html>"
    )


def _product_list(products: list[Product]) -> str:
    if not products:
        return "<p>No products found.</p>"
    e = html.escape
    rows = "".join(
        f"<li><a href='/product/{p.sku}'>{e(p.name)}</a> <span class='price'>{money(p.price_cents)}</span>"
        f" <span>{e(p.color)}</span></li>"
        for p in products
    )
    return f"<ul>{rows}</ul>"


class Shop:
    """The state of the site during one episode, and its pages."""

    def __init__(self, cart: dict[str, int] | None = None) -> None:
        self._lock = threading.Lock()
        self._cart: dict[str, int] = dict(cart or {})
        self._orders: list[Order] = []

    def snapshot(self) -> ShopState:
        with self._lock:
            return ShopState(cart=dict(self._cart), orders=tuple(self._orders))

    def handle(self, path: str, query: dict[str, str], form: dict[str, str] | None) -> Reply:
        with self._lock:
            if form is not None:
                return self._post(path, form)
            return self._get(path, query)

    # ------------------------------------------------------------ pages

    def _page(self, title: str, body: str, status: int = 200) -> Reply:
        return Reply.page(status, title, body, sum(self._cart.values()))

    def _get(self, path: str, query: dict[str, str]) -> Reply:
        products = catalog()
        if path == "/":
            return self._home()
        if path == "/search":
            return self._search(query.get("q", ""), query.get("sort", "relevance"))
        if path.startswith("/category/"):
            name = path.removeprefix("/category/")
            found = [p for p in products.values() if p.category == name]
            if not found:
                return self._page("Not found", "<h1>No such category</h1>", 404)
            return self._page(name.title(), f"<h1>{html.escape(name.title())}</h1>{_product_list(found)}")
        if path.startswith("/product/"):
            product = products.get(path.removeprefix("/product/"))
            if product is None:
                return self._page("Not found", "<h1>No such product</h1>", 404)
            return self._product(product)
        if path == "/cart":
            return self._cart_page(query.get("added"))
        if path == "/checkout":
            return self._checkout({}, [])
        if path.startswith("/orders/"):
            number = path.removeprefix("/orders/")
            order = next((o for o in self._orders if str(o.number) == number), None)
            if order is None:
                return self._page("Not found", "<h1>No such order</h1>", 404)
            return self._confirmation(order)
        return self._page("Not found", "<h1>Page not found</h1><p><a href='/'>Back to the shop</a></p>", 404)

    def _home(self) -> Reply:
        categories = sorted({p.category for p in catalog().values()})
        links = "".join(f"<li><a href='/category/{c}'>{html.escape(c.title())}</a></li>" for c in categories)
        featured = [catalog()[sku] for sku in ("mug-blue-classic", "notebook-black-hard", "lamp-white-desk")]
        body = (
            f"<h1>Welcome to the {NAME}</h1><h2>Categories</h2><ul>{links}</ul>"
            f"<h2>Featured</h2>{_product_list(featured)}"
        )
        return self._page("Home", body)

    def _search(self, q: str, sort: str) -> Reply:
        words = q.lower().split()

        def matches(p: Product) -> bool:
            text = f"{p.name} {p.description} {p.color} {p.category}".lower()
            return all(word in text for word in words)

        found = [p for p in catalog().values() if matches(p)]
        if sort == "price-asc":
            found.sort(key=lambda p: p.price_cents)
        elif sort == "price-desc":
            found.sort(key=lambda p: -p.price_cents)
        elif sort == "name":
            found.sort(key=lambda p: p.name)
        choices = {"relevance": "Relevance", "price-asc": "Price: low to high", "price-desc": "Price: high to low"}
        choices["name"] = "Name"
        options = "".join(
            f"<option value='{value}'{' selected' if value == sort else ''}>{label}</option>"
            for value, label in choices.items()
        )
        e = html.escape
        body = (
            f"<h1>Results for &ldquo;{e(q)}&rdquo;</h1>"
            f"<form action='/search'><input type='hidden' name='q' value='{e(q, quote=True)}'>"
            f"<label>Sort by <select name='sort'>{options}</select></label> <button>Apply</button></form>"
            f"<p>{len(found)} product{'' if len(found) == 1 else 's'}</p>{_product_list(found)}"
        )
        return self._page(f"Search: {q}", body)

    def _product(self, p: Product) -> Reply:
        e = html.escape
        body = (
            f"<h1>{e(p.name)}</h1><p class='price'>{money(p.price_cents)}</p>"
            f"<p>Color: {e(p.color)}</p><p>Category: <a href='/category/{p.category}'>{e(p.category.title())}</a></p>"
            f"<p>{e(p.description)}</p>"
            f"<form method='post' action='/cart/add'><input type='hidden' name='sku' value='{p.sku}'>"
            f"<label>Quantity <input type='number' name='quantity' value='1' min='1' max='{MAX_QUANTITY}'></label> "
            "<button>Add to cart</button></form>"
        )
        return self._page(p.name, body)

    def _summary(self, items: dict[str, int], shipping: str | None = None) -> str:
        e = html.escape
        rows = "".join(
            f"<tr><td>{e(catalog()[sku].name)}</td><td>{n}</td><td>{money(n * catalog()[sku].price_cents)}</td></tr>"
            for sku, n in items.items()
        )
        total = sum(n * catalog()[sku].price_cents for sku, n in items.items())
        if shipping:
            label, cost = SHIPPING[shipping]
            rows += f"<tr><td>{label} shipping</td><td></td><td>{money(cost)}</td></tr>"
            total += cost
        return (
            f"<table><tr><th>Product</th><th>Quantity</th><th>Price</th></tr>{rows}"
            f"<tr><th>Total</th><td></td><th>{money(total)}</th></tr></table>"
        )

    def _cart_page(self, added: str | None) -> Reply:
        e = html.escape
        notice = ""
        if added in catalog() and added in self._cart:
            notice = f"<p class='notice'>Added {e(catalog()[added].name)} to your cart.</p>"
        if not self._cart:
            return self._page("Cart", f"<h1>Your cart</h1>{notice}<p>Your cart is empty.</p><a href='/'>Shop</a>")
        rows = ""
        for sku, n in self._cart.items():
            p = catalog()[sku]
            hidden = f"<input type='hidden' name='sku' value='{sku}'>"
            rows += (
                f"<tr><td><a href='/product/{sku}'>{e(p.name)}</a></td><td>{money(p.price_cents)}</td><td>"
                f"<form class='inline' method='post' action='/cart/update'>{hidden}"
                f"<input type='number' name='quantity' value='{n}' min='0' max='{MAX_QUANTITY}' "
                f"aria-label='Quantity of {e(p.name, quote=True)}'> <button>Update</button></form></td><td>"
                f"<form class='inline' method='post' action='/cart/remove'>{hidden}"
                f"<button aria-label='Remove {e(p.name, quote=True)}'>Remove</button></form></td></tr>"
            )
        total = sum(n * catalog()[sku].price_cents for sku, n in self._cart.items())
        body = (
            f"<h1>Your cart</h1>{notice}<table><tr><th>Product</th><th>Price</th><th>Quantity</th><th></th></tr>"
            f"{rows}</table><p>Subtotal: <span class='price'>{money(total)}</span></p>"
            "<p><a href='/checkout'>Proceed to checkout</a> or <a href='/'>continue shopping</a></p>"
        )
        return self._page("Cart", body)

    def _checkout(self, form: dict[str, str], errors: list[str], status: int = 200) -> Reply:
        if not self._cart:
            return self._page("Checkout", "<h1>Checkout</h1><p>Your cart is empty.</p><a href='/'>Shop</a>", status)
        e = html.escape
        problems = "".join(f"<li>{e(m)}</li>" for m in errors)
        fields = "".join(
            f"<p><label for='{key}'>{label}</label> "
            f"<input id='{key}' name='{key}' value='{e(form.get(key, ''), quote=True)}'></p>"
            for key, label in ADDRESS_FIELDS
        )
        chosen = form.get("country", "")
        countries = "<option value=''>Choose a country</option>" + "".join(
            f"<option{' selected' if c == chosen else ''}>{c}</option>" for c in COUNTRIES
        )
        shipping = form.get("shipping", "standard")
        methods = "".join(
            f"<label><input type='radio' name='shipping' value='{key}'{' checked' if key == shipping else ''}> "
            f"{label} ({money(cost)})</label> "
            for key, (label, cost) in SHIPPING.items()
        )
        wrap = " checked" if form.get("gift_wrap") else ""
        body = (
            f"<h1>Checkout</h1>{self._summary(self._cart)}"
            + (f"<div class='error'><p>Please correct:</p><ul>{problems}</ul></div>" if errors else "")
            + f"<form method='post' action='/checkout'>{fields}"
            f"<p><label for='country'>Country</label> <select id='country' name='country'>{countries}</select></p>"
            f"<fieldset><legend>Shipping</legend>{methods}</fieldset>"
            f"<p><label><input type='checkbox' name='gift_wrap' value='yes'{wrap}> Gift wrap</label></p>"
            "<button>Place order</button></form>"
        )
        return self._page("Checkout", body, status)

    def _confirmation(self, order: Order) -> Reply:
        e = html.escape
        a = order.address
        body = (
            f"<h1>Thank you! Order #{order.number} is placed.</h1>{self._summary(order.items, order.shipping)}"
            f"<p>Shipping to: {e(a.name)}, {e(a.street)}, {e(a.city)} {e(a.postal_code)}, {e(a.country)}</p>"
            f"<p>Gift wrap: {'yes' if order.gift_wrap else 'no'}</p><p><a href='/'>Back to the shop</a></p>"
        )
        return self._page(f"Order #{order.number}", body)

    # ------------------------------------------------------------ forms

    def _post(self, path: str, form: dict[str, str]) -> Reply:
        sku = form.get("sku", "")
        if path in ("/cart/add", "/cart/update", "/cart/remove") and sku not in catalog():
            return self._page("Not found", "<h1>No such product</h1>", 404)
        try:
            quantity = int(form.get("quantity", "1") or "0")
        except ValueError:
            quantity = -1
        if path == "/cart/add":
            if not 1 <= quantity <= MAX_QUANTITY:
                return self._page("Bad quantity", f"<h1>Choose a quantity from 1 to {MAX_QUANTITY}</h1>", 400)
            if sku not in self._cart and len(self._cart) >= MAX_LINES:
                return self._page("Cart full", f"<h1>The cart holds {MAX_LINES} products at most</h1>", 400)
            self._cart[sku] = min(self._cart.get(sku, 0) + quantity, MAX_QUANTITY)
            return Reply.redirect("/cart?" + urlencode({"added": sku}))
        if path == "/cart/update":
            if not 0 <= quantity <= MAX_QUANTITY:
                return self._page("Bad quantity", f"<h1>Choose a quantity from 0 to {MAX_QUANTITY}</h1>", 400)
            if quantity == 0:
                self._cart.pop(sku, None)
            elif sku in self._cart:
                self._cart[sku] = quantity
            return Reply.redirect("/cart")
        if path == "/cart/remove":
            self._cart.pop(sku, None)
            return Reply.redirect("/cart")
        if path == "/checkout":
            return self._place_order(form)
        return self._page("Not found", "<h1>Page not found</h1>", 404)

    def _place_order(self, form: dict[str, str]) -> Reply:
        fields = {key: " ".join(form.get(key, "").split())[:MAX_FIELD_CHARS] for key, _ in ADDRESS_FIELDS}
        errors = [f"{label} is missing." for key, label in ADDRESS_FIELDS if not fields[key]]
        country = form.get("country", "")
        if country not in COUNTRIES:
            errors.append("Choose a country.")
        shipping = form.get("shipping", "")
        if shipping not in SHIPPING:
            errors.append("Choose a shipping method.")
        if not self._cart:
            errors.append("Your cart is empty.")
        if errors:
            return self._checkout(form, errors, 400)
        items = dict(self._cart)
        total = sum(n * catalog()[sku].price_cents for sku, n in items.items()) + SHIPPING[shipping][1]
        order = Order(
            number=len(self._orders) + 1,
            items=items,
            address=Address(country=country, **fields),
            shipping=shipping,
            gift_wrap=bool(form.get("gift_wrap")),
            total_cents=total,
        )
        self._orders.append(order)
        self._cart.clear()
        return Reply.redirect(f"/orders/{quote(str(order.number))}")
