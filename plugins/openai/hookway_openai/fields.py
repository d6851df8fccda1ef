"""Request field validation shared by the chat, completions and Responses parsers. Every error is
a 400 that names the field."""

from __future__ import annotations

from typing import Any

from hookway.errors import invalid

from .translate import image_block_from_url


def number(body: dict, name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"`{name}` must be a number, found {type(value).__name__}", name)
    return value


def integer(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"`{name}` must be an integer, found {type(value).__name__}", name)
    return value


def string(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"`{name}` must be a string, found {type(value).__name__}", name)
    return value


def boolean(body: dict, name: str) -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise invalid(f"`{name}` must be true or false, found {type(value).__name__}", name)
    return value


def obj(body: dict, name: str) -> dict | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(f"`{name}` must be an object, found {type(value).__name__}", name)
    return value


def stop(body: dict) -> list[str]:
    value = body.get("stop")
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value)
    raise invalid("`stop` must be a string or a list of strings", "stop")


def content_blocks(content: Any, path: str) -> list[dict]:
    """OpenAI message content (string or parts) -> canonical blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise invalid(f"`{path}` must be a string or a list of content parts", path)
    blocks = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise invalid(f"`{path}[{i}]` must be a content part object with a `type`", f"{path}[{i}]")
        kind = part["type"]
        if kind in ("text", "input_text", "output_text", "refusal"):
            text = part.get("text", part.get("refusal"))
            if not isinstance(text, str):
                raise invalid(f"`{path}[{i}].text` must be a string", f"{path}[{i}].text")
            blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise invalid(f"`{path}[{i}].image_url.url` must be a string", f"{path}[{i}].image_url")
            blocks.append(image_block_from_url(url))
        elif kind == "input_image" and isinstance(part.get("image_url"), str):   # Responses API
            blocks.append(image_block_from_url(part["image_url"]))
        else:
            blocks.append(part)   # input_audio, file...: kept as they are for OpenAI upstreams
    return blocks
