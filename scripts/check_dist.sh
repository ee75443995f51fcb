#!/usr/bin/env bash
# Build the sdist and the wheel, check them as PyPI would, then install the wheel into a fresh venv (no
# checkout on the path) and ask Airflow about the provider, as a new user would after `pip install`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
PACKAGE=airflow-provider-sora

rm -rf dist
"$BIN/python" -m build --installer uv --outdir dist . >/dev/null
"$BIN/twine" check --strict dist/*

# The license texts ride in both artifacts; the version is the one airflow_sora.__version__ declares.
VERSION="$("$BIN/python" -c 'import ast, pathlib
tree = ast.parse(pathlib.Path("airflow_sora/__init__.py").read_text())
print(next(n.value.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "__version__"))')"
"$BIN/python" - "$VERSION" <<'EOF'
import sys
import tarfile
import zipfile
from pathlib import Path

version = sys.argv[1]
wheels = list(Path("dist").glob("*.whl"))
sdists = list(Path("dist").glob("*.tar.gz"))
assert len(wheels) == 1 and len(sdists) == 1, f"expected one wheel and one sdist, found {wheels} {sdists}"
assert f"-{version}-" in wheels[0].name and sdists[0].name.endswith(f"-{version}.tar.gz"), (wheels, sdists)
wheel = zipfile.ZipFile(wheels[0]).namelist()
sdist = tarfile.open(sdists[0]).getnames()
for name in ("LICENSE", "NOTICE"):
    assert any(n.endswith(f".dist-info/licenses/{name}") for n in wheel), f"{name} missing from the wheel"
    assert any(n.endswith(f"/{name}") for n in sdist), f"{name} missing from the sdist"
assert "airflow_sora/py.typed" in wheel, "py.typed missing from the wheel"
assert not any(n.startswith(("tests/", "dags/", "bench/")) for n in wheel), "the wheel ships more than the package"
metadata = next(n for n in wheel if n.endswith(".dist-info/METADATA"))
text = zipfile.ZipFile(wheels[0]).read(metadata).decode()
assert "License-Expression: Apache-2.0" in text, "no SPDX license expression in the metadata"
extras = sorted(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("Provides-Extra: "))
assert extras == ["local", "openlineage", "redis", "s3"], f"public extras should be local, openlineage, redis and s3 only, found {extras}"
print(f"{wheels[0].name}: LICENSE, NOTICE, py.typed, License-Expression, extras {extras}")
print(f"{sdists[0].name}: LICENSE, NOTICE")
EOF

# A fresh venv with only the built wheel (and what it depends on, from the index).
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$BIN/uv" venv --quiet --python "$BIN/python" "$WORK/venv"
"$BIN/uv" pip install --quiet --python "$WORK/venv/bin/python" dist/*.whl
cd "$WORK"  # so the checkout's airflow_sora cannot be imported instead of the installed one
OUTPUT="$(AIRFLOW_HOME="$WORK/airflow" "$WORK/venv/bin/airflow" providers get "$PACKAGE" 2>&1)" || {
  echo "$OUTPUT"; echo "airflow providers get $PACKAGE failed"; exit 1; }
echo "$OUTPUT"
grep -q "$PACKAGE" <<<"$OUTPUT" || { echo "the provider is not listed"; exit 1; }
grep -q "$VERSION" <<<"$OUTPUT" || { echo "the provider does not report version $VERSION"; exit 1; }
LOCATION="$("$WORK/venv/bin/python" -c 'import airflow_sora; print(airflow_sora.__file__)')"
case "$LOCATION" in "$WORK"/venv/*) ;; *) echo "airflow_sora imported from $LOCATION, not the wheel"; exit 1 ;; esac
echo "dist check passed: $PACKAGE $VERSION"
