#!/bin/sh
# dlib's "johns" face photos (5 people x 11 colour photos, examples/johns/ of the dlib 19.24 source package)
# from Debian's package archive, aligned to 112x112 like ../shared/realdata's faces: a second, colour test set
# for benchmarks/real_fidelity.py (--calib / --faces). Needs apt (Debian) and the venv ../shared/realdata/build.sh
# made (mtcnn). usage: sh scripts/johns_faces.sh OUT [REALDATA]   (REALDATA default /tmp/k210-realdata)
set -e
OUT=${1:?usage: johns_faces.sh OUT [REALDATA]}; REAL=${2:-/tmp/k210-realdata}
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
mkdir -p "$W/apt/lists/partial" "$W/apt/parts" "$W/src/orl" "$W/src/color"
cat > "$W/apt/parts/deb-src.sources" <<EOS
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
A="-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$W/apt/parts -o Dir::State::Lists=$W/apt/lists"
apt-get $A update -qq
# only the upstream tarball (8.6 MB), not the 200 MB models tarball; apt-helper checks its hash
set -- $(apt-get $A source --print-uris dlib=19.24+dfsg-1 | grep "orig.tar.bz2'" | tr -d "'")
(cd "$W" && /usr/lib/apt/apt-helper download-file "$1" "$2" "$4" && \
  tar xjf "$2" --strip-components=3 -C src/color --wildcards '*/examples/johns/*')
"$REAL/venv/bin/python" "$HERE/../../shared/realdata/prepare_faces.py" "$W/src" "$OUT"
rm -f "$OUT/pairs.txt" "$OUT/prepare_log.json"  # 5 people make no 10-fold pairs: compare pairs the folders
echo "$OUT"
