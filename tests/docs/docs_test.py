"""docs/ stays true to the code.

- Every fenced block marked `<!-- file: PATH -->` in docs/*.md is PATH's
  whole text (docs/writing-blocks.md shows the example plugin's files so).
- Every folder includes only the folders drawn below it in the layer
  picture of docs/architecture.md ("Layers"), without exemptions: app/
  (the composition root) alone names both the engine and the model
  families; engine/ and server/ name no model family; client/ includes
  only util/ and the API; util/ nothing of the project.

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


# The layer picture of docs/architecture.md ("## Layers"): each line's
# label (columns 1-12) starts a layer, its folder (column 13) belongs to it.
# A folder includes only itself and the folders of the layers drawn below
# it, less the exclusions below; the API's generated headers are proto/'s.
arch = (root / "docs" / "architecture.md").read_text()
picture = re.search(r"## Layers\n\n```\n(.*?)\n```", arch, re.S)
layers = []  # [(label, [folders])], top to bottom
for line in picture.group(1).splitlines() if picture else []:
    label, rest = line[1:13].strip(), line[13:].split()
    if label:
        layers.append((label, []))
    if rest and rest[0].endswith("/") and layers:
        layers[-1][1].append(rest[0])
if not layers:
    failures.append("docs/architecture.md has no layer picture under '## Layers'")
row = {folder: i for i, (_, folders) in enumerate(layers) for folder in folders}
generated = {"loopserve/": "proto/", "inference/": "proto/", "grpc/health/": "proto/"}
model_families = ("blocks/", "blocks/diffusion/", "blocks/examples/")
# What a layer's place alone would allow, and is not so.
excluded = {
    "engine/": model_families,  # the engine names no model family
    "server/": model_families,  # nor does a front
    "client/": tuple(f for f in row if f not in ("client/", "util/", "proto/")),
}


def folder_of(path):
    """The picture's folder holding `path` (longest prefix), or None."""
    for prefix, folder in generated.items():
        if path.startswith(prefix):
            return folder
    best = None
    for folder in row:
        if path.startswith(folder) and (best is None or len(folder) > len(best)):
            best = folder
    return best


for folder in sorted(row):
    for source, header in includes(folder.rstrip("/")):
        if folder_of(str(source)) != folder:
            continue  # a deeper folder's file: checked there
        target = folder_of(header)
        if target is None or target == folder:
            continue
        if row[target] <= row[folder] or target in excluded.get(folder, ()):
            failures.append(f"{source} includes {header}: {folder} may not include "
                            f"{target} (docs/architecture.md, \"Layers\")")
for source in sorted(p for p in root.glob("*/") if p.is_dir()):
    name = source.name + "/"
    if name.startswith((".", "build")) or name in ("tests/", "bench/", "deploy/"):
        continue  # not the product's code (bench/ and tests/ use every layer)
    if any(source.rglob("*.cc")) and name not in row:
        failures.append(f"{name} holds C++ but is not in the layer picture")
# The engine, the blocks and the utilities know no gRPC: the engine links
# the API's messages, never its stubs.
for folder in ("engine", "blocks", "util", "proto"):
    for source, header in includes(folder):
        if header.startswith("grpc") or ".grpc.pb.h" in header:
            failures.append(f"{source} includes {header}: {folder}/ knows no gRPC")

for failure in failures:
    print("FAIL:", failure)
print(f"{shown} file blocks checked")
sys.exit(1 if failures else 0)
