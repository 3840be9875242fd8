"""EC2's XML: responses and errors.

A handler returns a dict; it becomes the children of `<ActionResponse>` in EC2's namespace,
after `<requestId>`:
- a dict is an element with children, in the dict's order;
- a list is an element with one `<item>` per value (EC2's lists, `instancesSet`, ...);
- True/False are `true`/`false`, numbers their text, None leaves the element out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree

NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
# Characters XML 1.0 cannot carry (a console log may hold them): replaced, never sent.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def response(action: str, request_id: str, body: Mapping[str, Any]) -> bytes:
    root = ElementTree.Element(f"{action}Response", xmlns=NAMESPACE)
    _child(root, "requestId", request_id)
    for name, value in body.items():
        _child(root, name, value)
    return _document(root)


def error(code: str, message: str, request_id: str) -> bytes:
    """EC2's error document: Response/Errors/Error/(Code, Message) and RequestID."""
    root = ElementTree.Element("Response")
    err = ElementTree.SubElement(ElementTree.SubElement(root, "Errors"), "Error")
    _child(err, "Code", code)
    _child(err, "Message", message)
    _child(root, "RequestID", request_id)
    return _document(root)


def _child(parent: ElementTree.Element, name: str, value: Any) -> None:
    if value is None:
        return
    element = ElementTree.SubElement(parent, name)
    if isinstance(value, Mapping):
        for key, sub in value.items():
            _child(element, key, sub)
    elif isinstance(value, list | tuple):
        for item in value:
            _child(element, "item", item)
    else:
        element.text = _text(value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _NOT_XML.sub("\ufffd", str(value))


def _document(root: ElementTree.Element) -> bytes:
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
