"""What an exported file carries besides the network, so that the file alone can be used: the class
table (index, ID, name), the preprocessing and the run's temperature (calibrated probabilities are
``softmax(logits / temperature)``), as one JSON document.

The preprocessing is :class:`fgvc.data.transforms.Preprocessing` written out explicitly — ``resize``
[H, W], ``crop`` [H, W] or null, ``interpolation``, ``antialias``, ``mean``, ``std``, ``value_scale``
(8-bit values are divided by it) and ``channel_order`` — so a program without fgvc rebuilds the input
(README); fgvc itself rebuilds it with the run's own code. Files that name only a recipe (older fgvc)
are read by resolving the name.

ONNX keeps the document in ``metadata_props["fgvc"]``; TorchScript and ExportedProgram archives in the
extra file ``fgvc.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from ..data.classes import ClassTable, ClassTableError
from ..data.transforms import Preprocessing
from ..errors import ConfigError, FgvcError

__all__ = ["METADATA_KEY", "EXTRA_FILE", "SCHEMA", "ExportMetadata", "Preprocessing", "MetadataError"]

METADATA_KEY = "fgvc"  # ONNX metadata_props key
EXTRA_FILE = "fgvc.json"  # TorchScript / ExportedProgram archive extra file
SCHEMA = "fgvc-export-v1"


class MetadataError(FgvcError):
    """An exported file without fgvc's metadata, or with metadata this fgvc cannot read."""


@dataclass(frozen=True)
class ExportMetadata:
    """Everything but the weights: which model, its classes, its preprocessing, its outputs."""

    format: str
    model: str
    backbone: str
    classes: ClassTable
    preprocessing: Preprocessing
    outputs: tuple[str, ...]  # "logits" (N, C), then "object_boxes" (N, 4) where the model localises
    batch: int | None  # None: any batch size; else the fixed batch the file was exported with
    source: str = ""  # the checkpoint it came from
    notes: tuple[str, ...] = field(default_factory=tuple)  # what the export leaves out, and why
    versions: dict[str, str] = field(default_factory=dict)
    # the run's fitted temperature: calibrated probabilities are softmax(logits / temperature); 1 for a
    # run without one and for files exported before fgvc stored it
    temperature: float = 1.0

    @property
    def localises(self) -> bool:
        return "object_boxes" in self.outputs

    def to_json(self) -> str:
        data = asdict(self)
        data["schema"] = SCHEMA
        data["preprocessing"] = self.preprocessing.to_dict()
        data["classes"] = [{"index": i, "id": cid, "name": name}
                           for i, (cid, name) in enumerate(zip(self.classes.ids, self.classes.names, strict=True))]
        return json.dumps(data, indent=1, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> ExportMetadata:
        try:
            data = json.loads(text)
            if data.get("schema") != SCHEMA:
                raise MetadataError(f"{where}: metadata schema {data.get('schema')!r} is not {SCHEMA!r}; "
                                    "export the run again with this fgvc")
            rows = sorted(data["classes"], key=lambda row: row["index"])
            if [row["index"] for row in rows] != list(range(len(rows))):
                raise MetadataError(f"{where}: the class table's indices are not 0..{len(rows) - 1}")
            classes = ClassTable(tuple(r["id"] for r in rows), tuple(r["name"] for r in rows))
            preprocessing = Preprocessing.from_dict(data["preprocessing"])
            temperature = float(data.get("temperature", 1.0))
            if not (temperature > 0 and temperature != float("inf")):
                raise MetadataError(f"{where}: temperature {temperature} is not a positive number; "
                                    "export the run again with `fgvc export`")
            return cls(format=data["format"], model=data["model"], backbone=data["backbone"], classes=classes,
                       preprocessing=preprocessing, outputs=tuple(data["outputs"]), batch=data["batch"],
                       source=data.get("source", ""), notes=tuple(data.get("notes", ())),
                       versions=dict(data.get("versions", {})), temperature=temperature)
        except MetadataError:
            raise
        except (ValueError, KeyError, TypeError, ClassTableError, ConfigError) as e:
            raise MetadataError(f"{where}: fgvc metadata unreadable ({type(e).__name__}: {e}); "
                                "export the run again with `fgvc export`") from None
