#!/usr/bin/env bash
# The course's one entry point. Creates the Python environment on first use.
#
#   ./course.sh build [--full] [--only NAME ...]   execute every notebook with papermill into build/,
#                                                  render HTML, regenerate assignments/, print a table
#   ./course.sh test [pytest args]                 run the test suite (what CI runs)
#   ./course.sh lab                                open JupyterLab on the course
#
# Environment: a virtual environment in .venv (override with COURSE_VENV), made with python3.11
# (override with COURSE_PYTHON). Conda users can instead `conda env create -f environment.yml`
# and set COURSE_VENV to that environment's prefix.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

VENV="${COURSE_VENV:-.venv}"
PY="${COURSE_PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP="$VENV/.course-env-stamp"

ensure_env() {
  local want
  want="$(cat pyproject.toml | cksum)"
  if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    return
  fi
  echo "== setting up the environment in $VENV (first run: a few minutes) =="
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
  echo "$want" > "$STAMP"
}

cmd="${1:-help}"
[ $# -gt 0 ] && shift
case "$cmd" in
  build)
    ensure_env
    export PATH="$PWD/$VENV/bin:$PATH"
    exec python scripts/build_course.py "$@"
    ;;
  test)
    ensure_env
    export PATH="$PWD/$VENV/bin:$PATH"
    exec python -m pytest "$@"
    ;;
  lab)
    ensure_env
    export PATH="$PWD/$VENV/bin:$PATH"
    exec jupyter lab "$@"
    ;;
  *)
    sed -n '2,12p' "$0"
    [ "$cmd" = help ] || exit 2
    ;;
esac
