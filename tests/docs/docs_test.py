"""docs/ stays true to the code.

- Every fenced block marked `<!-- file: PATH -->` in docs/*.md is PATH's
  whole text (docs/writing-blocks.md shows the example plugin's files so).
- The layers include only what is below them (docs/architecture.md,
  "Layers"): every folder of the tree, without exemptions. app/ (the
  composition root) alone names both the engine and the model families;
  client/ includes only util/ and the API.

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


# What each folder may include of the project (the layer picture of
# docs/architecture.md): a folder includes itself and the folders named here,
# nothing else of the tree; "loopserve/" is the API's generated messages.
allowed = {
    "util": ("util/",),
    "proto": ("util/", "loopserve/"),
    "blocks/core": ("blocks/core/", "util/"),
    "blocks/examples": ("blocks/examples/", "blocks/core/", "util/"),
    "blocks/diffusion": ("blocks/diffusion/", "blocks/core/", "util/", "loopserve/"),
    "blocks": ("blocks/", "util/", "loopserve/"),
    "engine": ("engine/", "blocks/core/", "util/", "loopserve/"),
    "server": ("server/", "engine/", "blocks/core/", "util/", "loopserve/", "inference/",
               "grpc/health/"),
    "client": ("client/", "util/", "loopserve/", "grpc/health/"),
    "app": ("app/", "server/", "engine/", "blocks/", "util/", "loopserve/"),
}
project = ("util/", "proto/", "blocks/", "engine/", "server/", "client/", "app/",
           "loopserve/", "inference/", "grpc/health/")
checked = set()
for folder in sorted(allowed, key=len, reverse=True):  # blocks/core before blocks
    for source, header in includes(folder):
        if source in checked:
            continue
        if header.startswith(project) and not header.startswith(allowed[folder]):
            failures.append(f"{source} includes {header}: {folder}/ may include only "
                            + ", ".join(allowed[folder]))
    checked.update(s for s, _ in includes(folder))
# The engine and the fronts know no gRPC below them: the engine links the
# API's messages, never its stubs.
for source, header in includes("engine"):
    if header.startswith("grpc") or ".grpc.pb.h" in header:
        failures.append(f"{source} includes {header}: the engine knows no gRPC")
for folder in ("blocks", "util", "proto"):
    for source, header in includes(folder):
        if header.startswith("grpc") or ".grpc.pb.h" in header:
            failures.append(f"{source} includes {header}: {folder}/ knows no gRPC")

for failure in failures:
    print("FAIL:", failure)
print(f"{shown} file blocks checked")
sys.exit(1 if failures else 0)
