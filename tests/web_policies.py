"""Scripted policies for the web environment: they read the page listing of each observation, as an
agent would, and act by element id. Used by the episodes of ``test_web_env.py`` (subprocess backend)
and ``test_docker_web.py`` (Docker), and by ``scripts/bench_web.py``.

Each ``solve_*`` plays one MiniWoB++ task to its end from the reset's observation and returns the
last step's result; ``solve_shop`` does the same for any shop task by reading its instruction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from openenv_ws import EnvSession

LINE = re.compile(r'^(?P<indent> *)\[(?P<id>\d+)\] (?P<role>\S+) (?P<name>"(?:[^"\\]|\\.)*")(?P<rest>.*)$')


class Element:
    def __init__(self, id: int, role: str, name: str, rest: str, depth: int) -> None:
        self.id, self.role, self.name, self.rest, self.depth = id, role, name, rest, depth

    def __repr__(self) -> str:
        return f"[{self.id}] {self.role} {self.name!r}{self.rest}"


def elements(observation: dict[str, Any]) -> list[Element]:
    """The page listing, parsed."""
    found = []
    for line in observation["page"].splitlines():
        m = LINE.match(line)
        assert m, f"a listing line that does not parse: {line!r}"
        found.append(Element(int(m["id"]), m["role"], json.loads(m["name"]), m["rest"], len(m["indent"]) // 2))
    return found


def find(observation: dict[str, Any], role: str | None = None, name: str | None = None, contains: str = "") -> int:
    """The id of the first element with that role and name (or a name containing ``contains``)."""
    for e in elements(observation):
        if (role is None or e.role == role) and (name is None or e.name == name) and contains in e.name:
            return e.id
    raise AssertionError(f"no {role} {name or contains!r} in:\n{observation['page']}")


def quoted(instruction: str) -> list[str]:
    return re.findall(r'"([^"]*)"', instruction)


async def act(env: EnvSession, action: dict[str, Any]) -> Any:
    return await env.step(action)


class ByTools:
    """A session driven through the web env's tools: each plain action a policy takes
    (``{"action": "click", "id": 12}``) is sent as the call of the tool of that name
    (``click`` with ``{"id": 12}``), so every policy here also plays by tool calls."""

    def __init__(self, env: EnvSession) -> None:
        self.env = env
        self.called: list[str] = []

    async def step(self, action: dict[str, Any]) -> Any:
        arguments = dict(action)
        name = arguments.pop("action")
        self.called.append(name)
        result = await self.env.call_tool(name, arguments)
        assert "tool_error" not in result.info, (name, arguments, result.info)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)


async def click(env: EnvSession, obs: dict[str, Any], role: str | None, name: str | None = None, **kw: str) -> Any:
    """Click the element found by :func:`find`; the next observation."""
    return (await act(env, {"action": "click", "id": find(obs, role, name, **kw)})).observation


async def type_into(env: EnvSession, obs: dict[str, Any], role: str, name: str, text: str) -> Any:
    return (await act(env, {"action": "type", "id": find(obs, role, name), "text": text})).observation


async def choose(env: EnvSession, obs: dict[str, Any], name: str, option: str) -> Any:
    return (await act(env, {"action": "select", "id": find(obs, "combobox", name), "option": option})).observation


# ---------------------------------------------------------------- MiniWoB++


async def solve_click_button(env: EnvSession, first: Any) -> Any:
    (label,) = quoted(first.observation["instruction"])
    return await act(env, {"action": "click", "id": find(first.observation, "button", label)})


async def solve_enter_text(env: EnvSession, first: Any) -> Any:
    (text,) = quoted(first.observation["instruction"])
    r = await act(env, {"action": "type", "id": find(first.observation, "textbox"), "text": text})
    return await act(env, {"action": "click", "id": find(r.observation, "button", "Submit")})


async def solve_login_user(env: EnvSession, first: Any) -> Any:
    user, password = quoted(first.observation["instruction"])
    obs = first.observation
    await act(env, {"action": "type", "id": find(obs, "textbox", "Username"), "text": user})
    r = await act(env, {"action": "type", "id": find(obs, "textbox", "Password"), "text": password})
    return await act(env, {"action": "click", "id": find(r.observation, "button", "Login")})


async def solve_click_checkboxes(env: EnvSession, first: Any) -> Any:
    wanted = re.match(r"Select (.*) and click Submit\.", first.observation["instruction"])
    assert wanted, first.observation["instruction"]
    names = [] if wanted[1] == "nothing" else [n.strip() for n in wanted[1].split(",")]
    obs = first.observation
    for name in names:
        obs = (await act(env, {"action": "click", "id": find(obs, "checkbox", name)})).observation
    assert all("checked" in e.rest.split() for e in elements(obs) if e.role == "checkbox" and e.name in names)
    return await act(env, {"action": "click", "id": find(obs, "button", "Submit")})


async def solve_choose_list(env: EnvSession, first: Any) -> Any:
    (item,) = re.findall(r"Select (.*) from the list", first.observation["instruction"])
    r = await act(env, {"action": "select", "id": find(first.observation, "combobox"), "option": item})
    return await act(env, {"action": "click", "id": find(r.observation, "button", "Submit")})


async def solve_focus_text(env: EnvSession, first: Any) -> Any:
    return await act(env, {"action": "click", "id": find(first.observation, "textbox")})


async def solve_book_flight(env: EnvSession, first: Any) -> Any:
    """Type both cities, pick them from the autocomplete, walk the date picker, choose the flight."""
    pattern = r"Book the (\w+) one-way flight from: (.*) to: (.*) on (\d+)/(\d+)/(\d+)\."
    m = re.match(pattern, first.observation["instruction"])
    assert m, first.observation["instruction"]
    which, origin, destination = m[1], m[2], m[3]
    month, day, year = int(m[4]), int(m[5]), int(m[6])
    obs = first.observation
    for field, city in (("From:", origin), ("To:", destination)):
        await act(env, {"action": "type", "id": find(obs, "textbox", field), "text": city})
        obs = (await act(env, {"action": "noop", "wait_s": 0.5})).observation  # the menu opens after 300 ms
        choice = next(e for e in elements(obs) if city in e.name and e.name.endswith(")"))  # "City, ST (XYZ)"
        obs = (await act(env, {"action": "click", "id": choice.id})).observation
    picker = next(e for e in elements(obs) if e.role == "textbox" and "readonly" in e.rest)
    obs = (await act(env, {"action": "click", "id": picker.id})).observation
    months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]
    months += ["November", "December"]
    wanted = f"{months[month - 1]} {year}"
    for _ in range(120):
        shown = " ".join(e.name for e in elements(obs) if e.name in months or (e.name.isdigit() and len(e.name) == 4))
        if shown == wanted:
            break
        direction = "Prev" if (year, month) < _shown(shown, months) else "Next"
        obs = (await act(env, {"action": "click", "id": find(obs, name=direction)})).observation
    else:
        raise AssertionError(f"the date picker never showed {wanted}")
    for _ in range(5):  # a click while the picker still slides in may not take: look, and click again
        await act(env, {"action": "click", "id": find(obs, "link", str(day))})
        obs = (await act(env, {"action": "noop", "wait_s": 0.6})).observation  # the picker fades out (400 ms)
        picked = next(e for e in elements(obs) if e.role == "textbox" and "readonly" in e.rest)
        if 'value=""' not in picked.rest:
            break
    obs = (await act(env, {"action": "click", "id": find(obs, "button", "Search")})).observation
    flights: list[tuple[int | None, int, int]] = []  # (duration in minutes, price, the button's id), in page order
    for _ in range(5):  # the results render after the click (slowly on a loaded machine)
        duration = None
        for e in elements(obs):
            if re.fullmatch(r"\d+h \d+m", e.name):
                hours, minutes = map(int, re.findall(r"\d+", e.name))
                duration = hours * 60 + minutes
            if e.role == "button" and e.name.startswith("Book flight for $"):
                flights.append((duration, int(e.name.rsplit("$", 1)[1]), e.id))
        if flights:
            break
        obs = (await act(env, {"action": "noop", "wait_s": 0.5})).observation
    assert flights, obs["page"]
    best = min(flights, key=lambda f: f[0] if which == "shortest" else f[1])
    return await act(env, {"action": "click", "id": best[2]})


def _shown(shown: str, months: list[str]) -> tuple[int, int]:
    name, year = shown.split()
    return int(year), months.index(name) + 1


MINIWOB: dict[str, Callable[[EnvSession, Any], Awaitable[Any]]] = {
    "click-button": solve_click_button,
    "enter-text": solve_enter_text,
    "login-user": solve_login_user,
    "click-checkboxes": solve_click_checkboxes,
    "book-flight": solve_book_flight,
    "choose-list": solve_choose_list,
    "focus-text": solve_focus_text,
}


# ---------------------------------------------------------------- the shop


FIELDS = (("name", "Full name"), ("street", "Street address"), ("city", "City"), ("postal_code", "Postal code"))


def _address(instruction: str) -> dict[str, str]:
    name, street, city_code, country = instruction.rsplit("delivered to: ", 1)[1].rstrip(".").split(", ")
    city, postal_code = city_code.split(" ", 1)
    return {"name": name, "street": street, "city": city, "postal_code": postal_code, "country": country}


async def solve_shop(env: EnvSession, first: Any, items: dict[str, int], search: dict[str, str]) -> Any:
    """Empty the cart, add ``items`` (product name: quantity; each found by searching ``search[name]``),
    and check out as the instruction says. The caller reads the products off the instruction."""
    instruction = first.observation["instruction"]
    obs = (await act(env, {"action": "goto", "path": "/cart"})).observation
    while "Remove" in obs["page"]:
        obs = (await act(env, {"action": "click", "id": find(obs, "button", contains="Remove ")})).observation
    for product, quantity in items.items():
        obs = await type_into(env, obs, "textbox", "Search products", search[product])
        obs = (await act(env, {"action": "press", "key": "Enter"})).observation
        assert obs["url"].startswith("/search?q="), obs["url"]
        obs = await click(env, obs, "link", product)
        obs = await type_into(env, obs, "spinbutton", "Quantity", str(quantity))
        obs = await click(env, obs, "button", "Add to cart")
        assert obs["url"].startswith("/cart"), obs
    obs = await click(env, obs, "link", "Proceed to checkout")
    address = _address(instruction)
    for field, label in FIELDS:
        obs = await type_into(env, obs, "textbox", label, address[field])
    obs = await choose(env, obs, "Country", address["country"])
    if "express" in instruction:
        obs = (await act(env, {"action": "click", "id": find(obs, "radio", contains="Express")})).observation
    if "gift wrap," in instruction and "no gift wrap" not in instruction:
        obs = (await act(env, {"action": "click", "id": find(obs, "checkbox", "Gift wrap")})).observation
    return await act(env, {"action": "click", "id": find(obs, "button", "Place order")})


async def solve_cheapest_mug(env: EnvSession, first: Any) -> Any:
    """The shop's cheapest-mug task, found the way an agent would: search, sort by price, read prices."""
    color = re.search(r"cheapest (\w+) mug", first.observation["instruction"])[1]
    obs = first.observation
    obs = await type_into(env, obs, "textbox", "Search products", f"{color} mug")
    obs = await click(env, obs, "button", "Search")
    obs = await choose(env, obs, "Sort by", "Price: low to high")
    obs = await click(env, obs, "button", "Apply")
    links = [e for e in elements(obs) if e.role == "link" and e.rest.startswith(" -> /product/")]
    assert links, obs["page"]
    cheapest = links[0].name
    return await solve_shop(env, first, {cheapest: 1}, {cheapest: cheapest})
