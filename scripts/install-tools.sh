#!/usr/bin/env bash
# Installs the command-line tools the deployment checks use into the folder given ($1).
set -euo pipefail
mkdir -p "$1/bin"
