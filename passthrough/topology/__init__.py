"""The PCIe tree of a host: where each function sits, and the tree as a picture a user can print.

Imported one way, each module only from those before it in this list (and from
``passthrough.pci.model`` and ``passthrough.pci.address``): ``attachment`` guesses which root
ports are the CPU's and which the chipset's; ``layout`` turns an
:class:`~passthrough.pci.model.Inventory` into rows in drawing order; ``placement`` says
where one function sits (CPU or chipset, its link against its best, its NUMA node) and
which node a VM should be pinned to, for the device page and the config generators; ``textwidth``
measures words; ``canvas`` holds the marks (palette, badges, pills); ``legend`` draws the
key and the groups' legend; ``svg`` draws the tree under them. Pure Python, no Django.

May import: ``passthrough.pci`` (the model and addresses) and ``passthrough.errors``.
"""

from passthrough.topology.attachment import Attachment, attachment
from passthrough.topology.canvas import PALETTE
from passthrough.topology.layout import Link, Row, build_rows
from passthrough.topology.svg import group_colors, render_svg

__all__ = ["PALETTE", "Attachment", "Link", "Row", "attachment", "build_rows", "group_colors", "render_svg"]
