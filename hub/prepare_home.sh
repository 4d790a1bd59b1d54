#!/bin/sh
# What a user of the course's image (hub/Dockerfile) finds at the first start; nothing is overwritten
# later. The local hub does the same in Python (hub/jupyterhub_config.py, prepare_home).
#   everyone:       ~/lectures/           the lecture notebooks
#   an instructor:  ~/unlearning-course/  nbgrader's course folder (nbgrader_config.py, solutions/ =
#                                         sources, assignments/ = releases; gradebook in build/nbgrader/)
#                   ~/.jupyter/nbgrader_config.py pointing at it (formgrader and nbgrader commands)
# The role comes from COURSE_HUB_ROLE (set by the hub: hub/z2jh-config.yaml's pre_spawn_hook).
set -e
COURSE=/opt/unlearning-course
cd "$HOME"
[ -e lectures ] || cp -r "$COURSE/notebooks" lectures
if [ "${COURSE_HUB_ROLE:-student}" = instructor ]; then
  if [ ! -e unlearning-course ]; then
    mkdir unlearning-course
    cp "$COURSE/nbgrader_config.py" unlearning-course/
    cp -r "$COURSE/solutions" "$COURSE/assignments" unlearning-course/
  fi
  if [ ! -e .jupyter/nbgrader_config.py ]; then
    mkdir -p .jupyter
    printf '%s\n' "load_subconfig('$HOME/unlearning-course/nbgrader_config.py')" > .jupyter/nbgrader_config.py
  fi
fi
chmod 700 "$HOME" 2>/dev/null || true
