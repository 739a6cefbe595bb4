#!/usr/bin/env bash
# Install what audio-monitor needs on Debian/Ubuntu: system libraries and a virtualenv in .venv.
# Usage: scripts/setup.sh [--dev]   (--dev adds the test tools and the test-only system packages)
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

# ffmpeg decodes network streams (sources of type: stream).
apt_pkgs=(python3-venv python3-dev libportaudio2 libsndfile1 ffmpeg)
if (( dev )); then
    # A real broker, virtual capture devices and sox for the tests.
    apt_pkgs+=(mosquitto mosquitto-clients libasound2-plugins alsa-utils pulseaudio pulseaudio-utils sox)
    # An RTSP server like a camera's, run under the system python3 (tests/support/rtsp_server.py).
    apt_pkgs+=(gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-base python3-gi)
fi
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
    sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The broker is started by the tests on their own port; the packaged service is not needed.
if (( dev )) && command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
    true
fi

python=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
# torch first, exactly pinned, from the CPU index: an unpinned or PyPI-resolved torch pulls
# several GB of CUDA packages. Its own dependencies come from PyPI with the project's below.
# (A pip find-links that already holds the CPU wheel, as on CI, supplies it offline.)
.venv/bin/pip install -q --no-deps --retries 1 torch==2.13.0 \
    --index-url https://download.pytorch.org/whl/cpu \
    || .venv/bin/pip install -q torch==2.13.0
if (( dev )); then
    .venv/bin/pip install -q -e '.[dev]'
else
    .venv/bin/pip install -q -e .
fi
