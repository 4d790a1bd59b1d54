# A student's server: nbgrader's instructor tools (formgrader, course list) off; the Assignments tab
# (assignment_list) and the Validate button stay on.
c = get_config()  # noqa: F821
c.ServerApp.jpserver_extensions = {"nbgrader.server_extensions.formgrader": False,
                                   "nbgrader.server_extensions.course_list": False}
