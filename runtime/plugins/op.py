"""What a visionrt plugin op is: :class:`PluginOp` with its :class:`Port` tensors and :class:`Attribute` s.

Every op is a node of domain :data:`DOMAIN` in the TensorRT-flavoured ONNX and a TensorRT plugin
of the same name in plugin namespace :data:`DOMAIN`, version :data:`PLUGIN_VERSION`; its
semantics are those of its NumPy reference (``<folder>/reference.py``). Each folder's
``onnx_node.py`` declares its ops with these types; :mod:`.registry` gathers them. Numpy-only;
``onnx`` is imported only to build a node.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

from ..errors import PluginError

#: ONNX domain of the plugin nodes and TensorRT plugin namespace.
DOMAIN = "visionrt"
#: TensorRT plugin version of every op (the node's ``plugin_version`` attribute).
PLUGIN_VERSION = "1"


@dataclasses.dataclass(frozen=True)
class Attribute:
    """A scalar node attribute: ``int`` (ONNX INT; TensorRT passes INT32), ``bool`` (INT 0 or 1)
    or ``float`` (FLOAT).

    ``default`` None means required; ``low``/``high`` are inclusive bounds checked at export.
    """

    name: str
    type: type
    default: int | float | None
    doc: str
    low: float | None = None
    high: float | None = None

    def limit_text(self) -> str | None:
        if self.low is None and self.high is None:
            return None
        low = "" if self.low is None else f"{self.low} <= "
        high = "" if self.high is None else f" <= {self.high}"
        return f"{low}{self.name}{high}"


@dataclasses.dataclass(frozen=True)
class Port:
    """An input or output tensor: ``dtype`` is ``T`` (the op's float type: float32 or float16),
    ``int64`` or ``int32``; ``shape`` in words, e.g. ``[R, 5]``."""

    name: str
    dtype: str
    shape: str
    doc: str


@dataclasses.dataclass(frozen=True)
class PluginOp:
    """One plugin op. ``evaluate(*arrays, **attributes)`` is its node semantics on NumPy arrays
    (through the reference) and returns a tuple of outputs; ``check(attributes)`` raises
    :class:`PluginError` for limits that tie attributes together (bounds are on each Attribute)."""

    name: str
    folder: str
    replaces: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    attributes: tuple[Attribute, ...]
    evaluate: Callable[..., tuple[Any, ...]]
    check: Callable[[Mapping[str, Any]], None] | None = None
    limits: tuple[str, ...] = ()

    def resolve(self, given: Mapping[str, Any]) -> dict[str, int | float]:
        """Complete ``given`` with defaults, type it and check every limit (:class:`PluginError`)."""
        known = {a.name for a in self.attributes}
        unknown = sorted(set(given) - known)
        if unknown:
            raise PluginError(f"{self.name}: unknown attributes {unknown}", fix=f"{self.name} takes {sorted(known)}")
        values = {}
        for attr in self.attributes:
            value = given.get(attr.name, attr.default)
            if value is None:
                raise PluginError(f"{self.name}: attribute '{attr.name}' is required", fix=attr.doc)
            if attr.type is float:
                if math.isnan(float(value)):
                    raise PluginError(f"{self.name}: attribute '{attr.name}' is NaN", fix=attr.doc)
            elif float(value) != int(value) or (attr.type is bool and value not in (0, 1)):
                raise PluginError(f"{self.name}: attribute '{attr.name}' must be "
                                  f"{'0 or 1' if attr.type is bool else 'an integer'}, got {value}")
            value = float(value) if attr.type is float else int(value)
            if (attr.low is not None and value < attr.low) or (attr.high is not None and value > attr.high):
                raise PluginError(f"{self.name}: {attr.name} = {value} is outside the plugin's limit "
                                  f"{attr.limit_text()}", fix=attr.doc)
            values[attr.name] = value
        if self.check is not None:
            self.check(values)
        return values

    def run(self, *arrays, **attributes) -> tuple[Any, ...]:
        """The node's outputs for NumPy inputs, attributes checked as at export."""
        return self.evaluate(*arrays, **self.resolve(attributes))

    def make_node(self, inputs: Sequence[str], outputs: Sequence[str], name: str | None = None,
                  **attributes):
        """The ``onnx.NodeProto`` of this op (needs the ``onnx`` package), with the
        ``plugin_namespace``/``plugin_version`` attributes TensorRT's ONNX parser reads."""
        from onnx import helper

        return helper.make_node(self.name, list(inputs), list(outputs), name=name, domain=DOMAIN,
                                plugin_namespace=DOMAIN, plugin_version=PLUGIN_VERSION,
                                **self.resolve(attributes))

    def onnx_schema(self):
        """This op as an ``onnx.defs.OpSchema`` (register it so onnx tools and onnxscript know the op)."""
        from onnx import defs

        schema = defs.OpSchema
        types = {"T": "T", "int64": "tensor(int64)", "int32": "tensor(int32)"}
        kinds = {int: schema.AttrType.INT, bool: schema.AttrType.INT, float: schema.AttrType.FLOAT}
        return schema(self.name, DOMAIN, int(PLUGIN_VERSION), doc=f"visionrt plugin op replacing {self.replaces}",
                      inputs=[schema.FormalParameter(p.name, types[p.dtype], p.doc) for p in self.inputs],
                      outputs=[schema.FormalParameter(p.name, types[p.dtype], p.doc) for p in self.outputs],
                      type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "element type")],
                      attributes=[schema.Attribute(a.name, kinds[a.type], a.doc, required=a.default is None)
                                  for a in self.attributes]
                      + [schema.Attribute(name, schema.AttrType.STRING, "read by TensorRT's ONNX parser",
                                          required=False) for name in ("plugin_namespace", "plugin_version")])

    def limit_texts(self) -> list[str]:
        """The plugin's limits in words: attributes with an upper bound, then the op's own limits."""
        return [a.limit_text() for a in self.attributes if a.high is not None] + list(self.limits)
