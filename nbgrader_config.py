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

# Autograding that holds by construction (course_lib/grading): nbgrader never runs a student's code.
# Its Execute step is replaced by the sandboxed executor's results (answer cells in a sandbox, tests
# in a trusted process), and feedback never shows hidden tests.
from course_lib.grading.nbgrader_io import autograde_preprocessors, feedback_preprocessors  # noqa: E402

c.Autograde.autograde_preprocessors = autograde_preprocessors()
c.GenerateFeedback.preprocessors = feedback_preprocessors()
