"""Run folders: manifests that record what produced a result, and checks that a resumed run matches."""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path

from mosr.errors import MosrError

LIBRARIES = ("mosr", "torch", "transformers", "peft", "accelerate", "gguf", "numpy", "scikit-learn")


def library_versions() -> dict:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_json(path: Path, data) -> None:
    """Write JSON through a temporary file, so a crash never leaves half a file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    partial.replace(path)


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise MosrError(f"could not read {path}: {error}") from None


def check_resumable(run_dir: Path, fingerprint: dict) -> None:
    """Refuse to mix samples of different settings in one run folder.

    `fingerprint` holds what the stored samples depend on (model, adapter, generation settings).
    The first run writes it to `fingerprint.json`; a later run with other settings stops with an error.
    """
    path = run_dir / "fingerprint.json"
    if path.is_file():
        stored = read_json(path)
        if stored != fingerprint:
            changed = sorted(key for key in set(stored) | set(fingerprint) if stored.get(key) != fingerprint.get(key))
            raise MosrError(
                f"{run_dir} holds samples made with other settings ({', '.join(changed)} differ): "
                "use a new --output folder, or delete this one"
            )
    else:
        write_json(path, fingerprint)
