#!/usr/bin/env bash
# Print the path of a working CPython 3.10 interpreter, or explain what to install and exit 1.
# nncase 1.9 (the last nncase with a K210 target) ships wheels for CPython 3.7-3.10 only.
set -u
is310() { "$1" -c 'import sys, venv; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' >/dev/null 2>&1; }
try() { if [ -n "$1" ] && is310 "$1"; then command -v "$1" 2>/dev/null || echo "$1"; exit 0; fi; }

try "${PYTHON:-}"
# a pyenv shim for python3.10 refuses unless asked: look at pyenv's real interpreters first
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root 2>/dev/null)
  for p in $(ls -d "$root"/versions/3.10*/bin/python3.10 2>/dev/null | sort -rV); do try "$p"; done
fi
for p in "$HOME"/.pyenv/versions/3.10*/bin/python3.10; do [ -e "$p" ] && try "$p"; done
for p in python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10 /opt/homebrew/bin/python3.10 python3 python; do
  try "$p"
done
if command -v uv >/dev/null 2>&1; then p=$(uv python find 3.10 2>/dev/null) && try "$p"; fi
if command -v conda >/dev/null 2>&1; then
  for p in $(conda env list 2>/dev/null | awk '{print $NF}'); do try "$p/bin/python3.10"; done
fi
cat >&2 <<'MSG'
k210tool needs CPython 3.10 (nncase 1.9, the last nncase with a K210 target, has wheels for 3.7-3.10 only)
and none was found. Install one, then run make again, or point PYTHON at it:
  pyenv install 3.10          # or: uv python install 3.10 / apt install python3.10 python3.10-venv
  make demo PYTHON=/path/to/python3.10
MSG
exit 1
