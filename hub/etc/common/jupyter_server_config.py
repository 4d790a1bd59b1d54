# Every user's server (the course's hub, hub/jupyterhub_config.py, and the image, hub/Dockerfile).
# Terminals run bash, not a login shell: a login shell's /etc/profile would reset PATH to the system's
# Python; this one keeps the course's environment first.
c = get_config()  # noqa: F821
c.ServerApp.terminado_settings = {"shell_command": ["/bin/bash"]}
