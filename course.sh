#!/usr/bin/env bash
# The course's one entry point. Creates the Python environment on first use.
#
#   ./course.sh build [--full] [--only NAME ...]   execute every notebook with papermill into build/ (per-cell and
#                                                  per-notebook timeouts: COURSE_CELL_TIMEOUT, COURSE_NOTEBOOK_TIMEOUT),
#                                                  regenerate assignments/, write the course site
#                                                  build/html/index.html, print a table
#   ./course.sh test [pytest args]                 run the test suite (what CI runs)
#   ./course.sh lab [jupyter lab args]             open JupyterLab on the course (--allow-root if root)
#   ./course.sh check NAME|NOTEBOOK                students: run your assignment (e.g. a02_sisa) as the grader
#                                                  does (visible tests only); which parts pass, fail, are not done
#   ./course.sh grade NAME SUBMISSIONS [options]   teaching assistants: grade a folder of notebooks/zips in parallel, each in a
#                                                  sandbox: table, grades.csv, grades_lms.csv, similarity.csv,
#                                                  feedback/ in build/grades/NAME (--help)
#   ./course.sh hub [--port P] [--stop]            as root: a local JupyterHub for a class (JupyterLab in this
#                                                  environment for every user, nbgrader's exchange, demo users
#                                                  instructor, student1, student2; state in build/hub/; --help)
#
# Environment: a virtual environment in .venv (override with COURSE_VENV), made with python3.11
# (override with COURSE_PYTHON). Conda users can instead `conda env create -f environment.yml`
# and set COURSE_VENV to that environment's prefix. COURSE_NO_SETUP=1 uses the environment as it
# is (no install step; the tests use it). The grader's sandbox needs bubblewrap (Debian package
# `bubblewrap`, installed here when missing if apt-get runs as root); without it grading falls back
# to COURSE_SANDBOX=none (no isolation: fine for `check`, and `grade` refuses unless --no-sandbox).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

VENV="${COURSE_VENV:-.venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac  # absolute (a conda prefix is)
PY="${COURSE_PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMP="$VENV/.course-env-stamp"

# The grader's sandbox (course_lib/grading/sandbox.py) runs students' code under bubblewrap. Install it
# when missing and apt-get can run as root (once per environment: a failed try is not repeated);
# never fail without it: grading then falls back to COURSE_SANDBOX=none (see sandbox.py).
ensure_sandbox() {
  local sudo="" tried="$VENV/.course-bwrap-tried"
  if ! command -v bwrap >/dev/null 2>&1 && [ "${COURSE_NO_SETUP:-}" != 1 ] && [ ! -e "$tried" ] \
      && command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo="sudo -n"
    fi
    if [ "$(id -u)" = 0 ] || [ -n "$sudo" ]; then
      echo "== installing bubblewrap (Debian package) for the grader's sandbox =="
      { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
          $sudo apt-get install -y -qq --no-install-recommends bubblewrap; } >/dev/null 2>&1 || true
      mkdir -p "$VENV" && touch "$tried" 2>/dev/null || true
    fi
  fi
  if ! command -v bwrap >/dev/null 2>&1; then
    echo "course.sh: bubblewrap (bwrap) is not installed and could not be installed here (apt-get install" \
         "bubblewrap as root); grading falls back to COURSE_SANDBOX=none: no isolation (fine for check," \
         "unsafe for grading a class)" >&2
  elif ! bwrap --ro-bind / / --unshare-all --die-with-parent true >/dev/null 2>&1; then
    echo "course.sh: bubblewrap cannot create namespaces here (a container without user namespaces?);" \
         "grading falls back to COURSE_SANDBOX=none: no isolation (fine for check, unsafe for grading a class)" >&2
  fi
  return 0
}

ensure_env() {
  local want
  ensure_sandbox
  if [ "${COURSE_NO_SETUP:-}" = 1 ] && [ -x "$VENV/bin/python" ]; then
    return
  fi
  want="$(cat pyproject.toml | cksum)"
  if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    return
  fi
  echo "== setting up the environment in $VENV (first run: a few minutes) =="
  if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PY" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 12)))' 2>/dev/null; then
      echo "course.sh: $PY is Python $("$PY" -c 'import platform; print(platform.python_version())' 2>/dev/null || echo '?'); the course needs 3.10-3.12 (3.11 recommended)." >&2
      echo "           Install python3.11, or point COURSE_PYTHON at one: COURSE_PYTHON=/path/to/python3.11 ./course.sh $cmd" >&2
      exit 2
    fi
    "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
  echo "$want" > "$STAMP"
}

# numba (inside UMAP) caches its compiled code here, so only the first run pays for compiling it
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/build/numba-cache}"

cmd="${1:-help}"
[ $# -gt 0 ] && shift
case "$cmd" in
  build)
    ensure_env
    export PATH="$VENV/bin:$PATH"
    exec python scripts/build_course.py "$@"
    ;;
  test)
    ensure_env
    export PATH="$VENV/bin:$PATH"
    exec python -m pytest "$@"
    ;;
  lab)
    ensure_env
    export PATH="$VENV/bin:$PATH"
    # As root (a Docker image, a lab machine's container) jupyter refuses to start without --allow-root.
    if [ "$(id -u)" = 0 ]; then
      set -- --allow-root "$@"
    fi
    exec jupyter lab "$@"
    ;;
  check)
    ensure_env
    export PATH="$VENV/bin:$PATH"
    if [ $# -ne 1 ]; then
      echo "usage: ./course.sh check NAME|NOTEBOOK   (e.g. ./course.sh check a02_sisa)" >&2
      exit 2
    fi
    exec python scripts/check.py "$@"
    ;;
  grade)
    ensure_env
    export PATH="$VENV/bin:$PATH"
    if [ $# -lt 2 ] && [ "${1:-}" != -h ] && [ "${1:-}" != --help ]; then
      echo "usage: ./course.sh grade NAME SUBMISSIONS [--workers N] [--timeout S] [--due WHEN] [--roster FILE] [--full] [--no-sandbox]" >&2
      echo "       (e.g. ./course.sh grade a02_sisa ~/Downloads/a02; ./course.sh grade --help for all options)" >&2
      exit 2
    fi
    exec python scripts/grade.py "$@"
    ;;
  hub)
    # The hub starts every user's server as that user's Unix account: root only (checked before the
    # environment, which a user other than its owner may not be able to use).
    if [ "$(id -u)" != 0 ] && [[ " $* " != *" --help "* && " $* " != *" -h "* ]]; then
      echo "course.sh hub: needs root (the hub runs each user's JupyterLab as that Unix user and creates the demo" \
           "users instructor, student1, student2): run sudo ./course.sh hub; one user without root: ./course.sh lab;" \
           "a hub for a class: docs/admin.md" >&2
      exit 2
    fi
    ensure_env
    export PATH="$VENV/bin:$PATH"
    exec python hub/hubctl.py "$@"
    ;;
  *)
    sed -n '2,/^set -euo/{/^#/p}' "$0"
    [ "$cmd" = help ] || exit 2
    ;;
esac
