"""JupyterHub configuration of the course (``./course.sh hub`` starts it through ``hub/hubctl.py``).

One hub on one machine: every user's server is JupyterLab run by the course's own environment
(``.venv``: the same Python, ``course_lib`` and nbgrader as ``./course.sh lab``), started as that Unix
user (JupyterHub's ``LocalProcessSpawner``: the hub runs as root). nbgrader's exchange is a shared
folder in the hub's state folder; a user's role in the course (instructor or student) decides which
nbgrader extensions and which folders the user gets (see :func:`prepare_home`).

Everything is read from environment variables that ``hub/hubctl.py`` sets:

====================  ===========================================================================
COURSE_ROOT           the course repository (this file's parent folder by default)
COURSE_VENV           the course's Python environment (``COURSE_ROOT/.venv``)
COURSE_HUB_STATE      the state folder: database, logs, homes, exchange (``COURSE_ROOT/build/hub``)
COURSE_HUB_IP/PORT    where the hub answers (``127.0.0.1:8000``); the hub's API and the proxy's API
                      use PORT+1 and PORT+2 on 127.0.0.1
COURSE_HUB_INSTRUCTORS / COURSE_HUB_STUDENTS   comma-separated user names (``instructor`` /
                      ``student1,student2``)
COURSE_HUB_PASSWORD   the demo authenticator's shared password (read from STATE/password)
COURSE_HUB_PROXY      the ``configurable-http-proxy`` executable
====================  ===========================================================================

**The authenticator.** The demo uses JupyterHub's ``SharedPasswordAuthenticator``: any listed user logs in
with the one shared password (printed by ``./course.sh hub``, kept in ``STATE/password``). For a real
class replace the block marked AUTHENTICATOR below, e.g. with PAM (the machine's own accounts:
``c.JupyterHub.authenticator_class = "pam"``), or OAuth/LTI from your LMS
(``oauthenticator``'s ``GenericOAuthenticator``, ``ltiauthenticator``), keeping ``allowed_users`` /
``admin_users`` and the role lists; docs/admin.md says how.
"""
import os
import pwd
import shutil
import stat
from pathlib import Path

c = get_config()  # noqa: F821  (provided by JupyterHub)

ROOT = Path(os.environ.get("COURSE_ROOT", Path(__file__).resolve().parent.parent))
VENV = Path(os.environ.get("COURSE_VENV", ROOT / ".venv"))
STATE = Path(os.environ.get("COURSE_HUB_STATE", ROOT / "build" / "hub"))
IP = os.environ.get("COURSE_HUB_IP", "127.0.0.1")
PORT = int(os.environ.get("COURSE_HUB_PORT", "8000"))
COURSE_ID = "unlearning-course"
INSTRUCTORS = [u for u in os.environ.get("COURSE_HUB_INSTRUCTORS", "instructor").split(",") if u]
STUDENTS = [u for u in os.environ.get("COURSE_HUB_STUDENTS", "student1,student2").split(",") if u]
EXCHANGE = STATE / "exchange"
ETC = STATE / "etc" / "jupyter"          # Jupyter config folders the single-user servers read

# ----------------------------------------------------------------- the hub and its proxy
c.JupyterHub.bind_url = f"http://{IP}:{PORT}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{PORT + 1}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{PORT + 2}"
c.ConfigurableHTTPProxy.command = [os.environ.get("COURSE_HUB_PROXY", "configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(STATE / "proxy.pid")
c.JupyterHub.db_url = "sqlite:///" + str(STATE / "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(STATE / "jupyterhub.pid")
c.JupyterHub.cleanup_servers = True       # stopping the hub stops every user's server
c.JupyterHub.cleanup_proxy = True

# ----------------------------------------------------------------- AUTHENTICATOR (demo; replace for a class)
# JupyterHub's SharedPasswordAuthenticator: every allowed user logs in with the one shared password
# (at least 8 characters). For a real class, e.g. the machine's accounts (PAM):
#     c.JupyterHub.authenticator_class = "pam"
# or your university's single sign-on (pip install oauthenticator):
#     c.JupyterHub.authenticator_class = "generic-oauth"   # plus its client id, secret and URLs
# and keep allowed_users / admin_users below (or the authenticator's groups) in step with the roster.
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = os.environ.get("COURSE_HUB_PASSWORD", "")
# ----------------------------------------------------------------- (end of the demo authenticator)
c.Authenticator.allowed_users = set(INSTRUCTORS) | set(STUDENTS)
c.Authenticator.admin_users = set(INSTRUCTORS)

# A service token for scripts and the tests (STATE/admin-token, readable by root only): it may
# create users' tokens and start and stop their servers.
_token_file = STATE / "admin-token"
if _token_file.exists():
    c.JupyterHub.services = [{"name": "course-admin", "api_token": _token_file.read_text().strip()}]
    c.JupyterHub.load_roles = [{"name": "course-admin", "services": ["course-admin"],
                                "scopes": ["admin:users", "admin:servers", "tokens", "access:servers",
                                           "read:hub", "list:users", "read:users"]}]

# ----------------------------------------------------------------- every user's server
# The servers' Python: the course's environment, or the bridge hub/hubctl.py made to it (same packages,
# a Python every user may run); `python -m jupyterhub.singleuser` needs no console script.
SERVER_ENV = Path(os.environ.get("COURSE_HUB_SERVER_ENV", VENV))
c.Spawner.cmd = [str(SERVER_ENV / "bin" / "python"), "-m", "jupyterhub.singleuser"]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.start_timeout = 180             # JupyterLab with nbgrader's extensions on a busy 2-core machine
c.Spawner.http_timeout = 120
c.Spawner.args = ["--ServerApp.terminals_enabled=True"]
# Local processes have no memory limit; Kubernetes (hub/z2jh-config.yaml) or systemdspawner enforce
# what docs/admin.md measured. These are what the hub tells the server it may use:
c.Spawner.mem_limit = "3G"
c.Spawner.cpu_limit = 1.0


def role(user: str) -> str:
    """``instructor`` or ``student`` (a user on neither list is a student)."""
    return "instructor" if user in INSTRUCTORS else "student"


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    for p in [path, *path.rglob("*")]:
        os.lchown(p, uid, gid)


def prepare_home(user: str) -> Path:
    """What a user finds at the first start (nothing is overwritten later):

    * everyone: ``~/lectures/`` (the course's lecture notebooks);
    * an instructor: ``~/unlearning-course/`` (nbgrader's course folder: ``nbgrader_config.py``,
      ``solutions/`` = sources, ``assignments/`` = releases; gradebook and submissions in
      ``build/nbgrader/``) and ``~/.jupyter/nbgrader_config.py`` pointing at it, so the formgrader and
      ``nbgrader`` commands in a terminal find the course.

    The home is made private (0700): no student can read another's work or feedback.
    """
    pw = pwd.getpwnam(user)
    home = Path(pw.pw_dir)
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    os.chmod(home, 0o700)
    lectures = home / "lectures"
    if not lectures.exists():
        shutil.copytree(ROOT / "notebooks", lectures, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        _chown_tree(lectures, pw.pw_uid, pw.pw_gid)
    if role(user) == "instructor":
        course = home / COURSE_ID
        if not course.exists():
            course.mkdir()
            shutil.copy(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
            for sub in ("solutions", "assignments"):
                shutil.copytree(ROOT / sub, course / sub, ignore=shutil.ignore_patterns(".ipynb_checkpoints",
                                                                                       "__pycache__"))
            _chown_tree(course, pw.pw_uid, pw.pw_gid)
        cfg = home / ".jupyter" / "nbgrader_config.py"
        if not cfg.exists():
            cfg.parent.mkdir(exist_ok=True)
            cfg.write_text("# written by the course's hub: the instructor's nbgrader course folder\n"
                           f"load_subconfig({str(course / 'nbgrader_config.py')!r})\n",
                           encoding="utf-8")
            _chown_tree(cfg.parent, pw.pw_uid, pw.pw_gid)
    return home


def pre_spawn_hook(spawner) -> None:
    """Prepare the home, then give the server the course's environment and the role's config."""
    user = spawner.user.name
    home = prepare_home(user)
    spawner.environment.update({
        "PATH": f"{SERVER_ENV / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        # common (exchange, course id) + the role's (extensions on or off); see write_jupyter_config
        "JUPYTER_CONFIG_PATH": f"{ETC / role(user)}:{ETC / 'common'}",
        "NUMBA_CACHE_DIR": str(home / ".cache" / "numba"),
        "COURSE_HUB_ROLE": role(user),
    })


c.Spawner.pre_spawn_hook = pre_spawn_hook


def write_jupyter_config() -> None:
    """The Jupyter config the single-user servers read (``JUPYTER_CONFIG_PATH``), from ``hub/etc/`` (which
    the image, hub/Dockerfile, installs too) plus the exchange's place:

    * ``common/nbgrader_config.py``: the exchange folder and the course id (everyone); terminals run
      ``bash`` in the course's environment;
    * ``student/``: nbgrader's formgrader and create-assignment tools switched off (server and lab);
    * ``instructor/``: everything on (the formgrader's REST API is what instructors and tests use).

    And the exchange itself: a world-writable folder with the sticky bit (nbgrader makes
    ``exchange/<course>/inbound`` write-only for students, so no one lists another's submission).
    """
    shutil.copytree(ROOT / "hub" / "etc", ETC, dirs_exist_ok=True)
    (ETC / "common" / "nbgrader_config.py").write_text(
        "# written by the course's hub (hub/jupyterhub_config.py)\n"
        "c = get_config()  # noqa: F821\n"
        f"c.Exchange.root = {str(EXCHANGE)!r}\n"
        f"c.CourseDirectory.course_id = {COURSE_ID!r}\n", encoding="utf-8")
    for p in (STATE, STATE / "etc", ETC, *ETC.rglob("*")):
        os.chmod(p, os.stat(p).st_mode | stat.S_IRGRP | stat.S_IROTH | (stat.S_IXGRP | stat.S_IXOTH if p.is_dir() else 0))
    EXCHANGE.mkdir(parents=True, exist_ok=True)
    os.chmod(EXCHANGE, 0o1777)


write_jupyter_config()
