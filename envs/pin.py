"""Pin the pip part of each conda env file (envs/*.yaml) to requirements.lock.

Each file's pip part lists every distribution its env installs with pip, each at the lock's
version: the names it lists, resolved by pip against the package index with the lock as
constraints, plus whatever they pull in. Packages that must go in without their declared
dependencies (they name the GUI build of OpenCV, or would pull torch into a torch-free env)
are installed by the env's post-deploy script (envs/<name>.post-deploy.sh, which Snakemake
runs after creating the env), pinned the same way.

    python envs/pin.py          rewrite the pip parts (after `make lock`, or to add a package:
                                add its name to a pip part, then run this)
    python envs/pin.py --check  exit 1 when a file is not what this would write

Resolving needs pip's package index (about a minute per env).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ENVS = Path(__file__).resolve().parent
LOCK = ENVS.parent / "requirements.lock"
PIP_LINE = "  - pip:\n"


def lock() -> dict[str, Requirement]:
    """The lock's pins by canonical name."""
    reqs = (Requirement(line) for line in LOCK.read_text().splitlines()
            if line.strip() and not line.startswith("#"))
    return {canonicalize_name(r.name): r for r in reqs}


def env_files() -> list[Path]:
    return sorted(ENVS.glob("*.yaml"))


def pip_part(path: Path) -> list[str]:
    """The requirement lines of an env file's pip part."""
    deps = yaml.safe_load(path.read_text())["dependencies"]
    parts = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    return parts[0] if parts else []


def post_deploy(path: Path) -> list[str]:
    """The requirements its post-deploy script installs with ``pip install --no-deps``."""
    script = path.with_suffix(".post-deploy.sh")
    if not script.is_file():
        return []
    out = []
    for line in script.read_text().splitlines():
        if re.match(r"\s*(python -m )?pip install ", line):
            words = line.split()
            if "--no-deps" not in words:
                raise ValueError(f"{script}: pip install without --no-deps: {line!r}")
            out += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return out


def resolve(requirements: list[str], constraints: bool = True) -> dict[str, str]:
    """What pip would install for ``requirements`` in an empty env (with the lock as
    constraints unless told not): name -> version (the index's spelling of the name)."""
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--report", "-", *(["-c", str(LOCK)] if constraints else []), *requirements]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"pip could not resolve {requirements}:\n{res.stderr[-3000:]}")
    report = json.loads(res.stdout)
    return {i["metadata"]["name"]: i["metadata"]["version"] for i in report["install"]}


def pinned(path: Path) -> str:
    """The env file with its pip part resolved and pinned (sorted as the lock is)."""
    text = path.read_text()
    if PIP_LINE not in text:
        return text
    names = [Requirement(r).name for r in pip_part(path)]
    resolved = resolve(names)
    lines = sorted((f"{n}=={v}" for n, v in resolved.items()), key=str.casefold)
    head = text[: text.index(PIP_LINE) + len(PIP_LINE)]
    return head + "".join(f"      - {line}\n" for line in lines)


def main(argv: list[str]) -> int:
    stale = []
    for path in env_files():
        text = pinned(path)
        if text != path.read_text():
            stale.append(path.name)
            if "--check" not in argv:
                path.write_text(text)
    if stale:
        print(("not pinned: " if "--check" in argv else "rewrote: ") + ", ".join(stale))
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
