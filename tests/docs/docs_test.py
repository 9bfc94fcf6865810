"""docs/ stays true to the code.

- Every fenced block marked `<!-- file: PATH -->` in docs/*.md is PATH's
  whole text (docs/writing-blocks.md shows the example plugin's files so).
- The layers include only what is below them: server/ (the gRPC front) and
  engine/ (the run engine) include no model family, engine/ no gRPC, and
  blocks/ neither of them (docs/architecture.md, "Layers").

Usage: docs_test.py SOURCE_DIR
"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1])
failures = []

marker = re.compile(r"<!-- file: (\S+) -->\n```[a-z]*\n(.*?)\n```", re.S)
shown = 0
for doc in sorted((root / "docs").glob("*.md")):
    for path, text in marker.findall(doc.read_text()):
        shown += 1
        actual = (root / path).read_text().rstrip("\n")
        if text != actual:
            failures.append(f"{doc.name}: the block marked {path} differs from the file")
if shown == 0:
    failures.append("no <!-- file: --> blocks found in docs/")

include = re.compile(r'^#include ["<]([^">]+)[">]', re.M)


def includes(folder, skip=()):
    for source in sorted((root / folder).rglob("*")):
        if source.suffix in (".h", ".cc", ".in") and source.name not in skip:
            for header in include.findall(source.read_text()):
                yield source.relative_to(root), header


model_families = ("blocks/diffusion/", "blocks/examples/", "blocks/builtin_blocks.h")
for source, header in includes("server"):
    if header.startswith(model_families):
        failures.append(f"{source} includes {header}: the front names no model family")
# default_pipelines is the engine's one link to the built-in types.
for source, header in includes("engine", skip=("default_pipelines.cc",)):
    if header.startswith(model_families):
        failures.append(f"{source} includes {header}: the engine names no model family")
    if header.startswith("grpc") or ".grpc.pb.h" in header:
        failures.append(f"{source} includes {header}: the engine knows no gRPC")
for source, header in includes("blocks"):
    if header.startswith(("engine/", "server/", "grpc")):
        failures.append(f"{source} includes {header}: blocks/ is below the engine")

for failure in failures:
    print("FAIL:", failure)
print(f"{shown} file blocks checked")
sys.exit(1 if failures else 0)
