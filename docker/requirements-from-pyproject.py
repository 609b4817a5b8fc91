"""Print requirements from pyproject.toml, one a line (for pip's -r).

    python3 requirements-from-pyproject.py pyproject.toml --extras clients --skip matplotlib
    python3 requirements-from-pyproject.py pyproject.toml --base --build --extras clients

--extras: optional-dependency groups (comma- or space-separated); --skip: distribution names
to leave out; --base: the project's own dependencies too; --build: build-system.requires too.
docker/Dockerfile uses it to install what the demo clients need without the plotting stack,
and docker/test-compose.sh to fetch the same set as wheels; pyproject.toml stays the one list.
"""

import argparse
import re
import sys
import tomllib

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("pyproject")
parser.add_argument("--extras", default="")
parser.add_argument("--skip", default="")
parser.add_argument("--base", action="store_true")
parser.add_argument("--build", action="store_true")
args = parser.parse_args()

with open(args.pyproject, "rb") as f:
    data = tomllib.load(f)
project = data["project"]
extras = project.get("optional-dependencies", {})
skipped = {name.lower() for name in args.skip.replace(",", " ").split()}
reqs: list[str] = []
if args.build:
    reqs += data.get("build-system", {}).get("requires", [])
if args.base:
    reqs += project.get("dependencies", [])
for group in args.extras.replace(",", " ").split():
    if group not in extras:
        sys.exit(f"{parser.prog}: no optional-dependency group {group!r} in {args.pyproject}")
    reqs += extras[group]
for req in dict.fromkeys(reqs):
    if re.split(r"[^A-Za-z0-9._-]", req, maxsplit=1)[0].lower() not in skipped:
        print(req)
