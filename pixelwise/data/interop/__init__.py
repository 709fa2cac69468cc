"""Label exchange with annotation tools: a dataset's masks exported as, and imported from, COCO JSON
(compressed RLE), CVAT for images 1.1 XML (mask RLE) and Label Studio JSON (brush RLE).

::

    from pixelwise.data import load_dataset_spec
    from pixelwise.data.interop import export_labels, import_labels

    spec = load_dataset_spec("data.yaml")
    export_labels(spec, "val.xml", to="cvat", splits=["val"])          # label in CVAT, export, then
    import_labels("annotations.xml", spec, "relabelled/")              # masks in the dataset's encoding

Export then import reproduces the masks exactly, unlabelled pixels included. Each format is one
:class:`LabelFormat` object (:mod:`.coco`, :mod:`.cvat`, :mod:`.labelstudio`) and each run-length
encoding a pair of pure functions (:mod:`.rle`); :mod:`.transfer` reads and writes datasets.
Files are untrusted input: image sizes are bounded by :data:`MAX_IMAGE_PIXELS`, RLE runs must cover
their mask exactly, labels must be the dataset's classes, XML with a DTD is refused, and every
problem is a one-line :class:`~pixelwise.errors.PixelwiseError` naming the file and the item.
"""

from ._base import (
    MAX_IMAGE_PIXELS,
    ExportClass,
    LabelFormat,
    get_label_format,
    list_label_formats,
    register_label_format,
)
from .coco import CocoFormat
from .cvat import CvatFormat
from .labelstudio import LabelStudioFormat, labelstudio_config
from .transfer import (
    DEFAULT_IMAGE_PREFIX,
    ExportReport,
    ImportReport,
    detect_label_format,
    export_classes,
    export_labels,
    import_labels,
)

__all__ = [
    "DEFAULT_IMAGE_PREFIX",
    "MAX_IMAGE_PIXELS",
    "CocoFormat",
    "CvatFormat",
    "ExportClass",
    "ExportReport",
    "ImportReport",
    "LabelFormat",
    "LabelStudioFormat",
    "detect_label_format",
    "export_classes",
    "export_labels",
    "get_label_format",
    "import_labels",
    "labelstudio_config",
    "list_label_formats",
    "register_label_format",
]
