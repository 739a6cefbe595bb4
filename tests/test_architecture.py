"""docs/ARCHITECTURE.md names every module of the package, so its map stays the real one."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_the_package_map_names_every_module() -> None:
    text = (REPO_ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    package = REPO_ROOT / "monitor"
    modules = sorted(
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if path.name != "__init__.py" or path.parent.name == "config"
    )
    assert len(modules) > 40
    missing = [module for module in modules if f"`{module}`" not in text]
    assert missing == []
