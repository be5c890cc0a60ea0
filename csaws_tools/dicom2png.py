"""Former path of :mod:`csaws_tools.dicom.convert`, kept so existing imports work."""

from __future__ import annotations

from .dicom.convert import (
    convert,
    convert_file,
    file_digest,
    is_own_output,
    nothing_found,
    plan,
)
from .dicom.discovery import (
    DICOM_SUFFIXES,
    Found,
    NameTemplate,
    default_output_name,
    find_inputs,
    frame_suffix,
    is_dicom,
)
from .dicom.header import (
    NotAnImage,
    captured,
    header_fields,
    is_dicomdir,
    read_header,
)
from .dicom.pixels import (
    load_image,
)
from .dicom.render import (
    COLOUR_MODES,
    FRAME_ALL,
    Options,
    render_colour,
    render_dataset,
    to_array,
)
from .naming import (
    sanitise,
)

__all__ = [
    "COLOUR_MODES",
    "FRAME_ALL",
    "Options",
    "render_colour",
    "render_dataset",
    "to_array",
    "DICOM_SUFFIXES",
    "Found",
    "NameTemplate",
    "default_output_name",
    "find_inputs",
    "frame_suffix",
    "is_dicom",
    "NotAnImage",
    "captured",
    "header_fields",
    "is_dicomdir",
    "read_header",
    "convert",
    "convert_file",
    "file_digest",
    "is_own_output",
    "nothing_found",
    "plan",
    "load_image",
    "sanitise",
]
