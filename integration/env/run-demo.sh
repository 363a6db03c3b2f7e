#!/usr/bin/env bash
# Placeholder: the demo that `make run` starts (nodelet against containerd).
set -euo pipefail
echo "TODO"
