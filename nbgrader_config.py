"""nbgrader configuration of the course.

solutions/  = nbgrader *source* (instructor versions, with solutions and hidden tests)
assignments/ = nbgrader *release* (student versions, generated, committed)
The gradebook and the submitted / autograded / feedback folders live under build/nbgrader,
outside git.
"""
import os

c = get_config()  # noqa: F821  (provided by nbgrader)

_root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.root = _root
c.CourseDirectory.course_id = "unlearning-course"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "assignments"
c.CourseDirectory.submitted_directory = os.path.join("build", "nbgrader", "submitted")
c.CourseDirectory.autograded_directory = os.path.join("build", "nbgrader", "autograded")
c.CourseDirectory.feedback_directory = os.path.join("build", "nbgrader", "feedback")
os.makedirs(os.path.join(_root, "build", "nbgrader"), exist_ok=True)
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(_root, "build", "nbgrader", "gradebook.db")

# Graded notebooks train small models: allow far more than nbgrader's default 30 s per cell.
c.ExecutePreprocessor.timeout = 600
c.Execute.timeout = 600
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Autograding that holds (see course_lib.grading.autograde_preprocessors): a static check of the
# answer cells before execution, and after it a test cell scores only if it ran to its end with
# no error and no tampering above it; warnings (stderr) and displayed values never change a score.
from course_lib.grading import autograde_preprocessors  # noqa: E402

c.Autograde.autograde_preprocessors = autograde_preprocessors()
