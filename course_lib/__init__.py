"""course_lib: the small library under the machine-unlearning course.

One module per concern:

- ``config``   FAST switch, seeds, paths        - ``device``   device choice and banner
- ``data``     data sets and forget sets        - ``models``   SmallCNN, ResNet-18, MLP
- ``train``    the SGD loop, prediction         - ``metrics``  UA, RA, TA, MIA, disparity
- ``unlearn``  approximate unlearners           - ``plots``    shared figures
- ``grading``  nbgrader round trip, assertions
- lessons: ``ridge``, ``audit``, ``stacked``, ``dp`` (lesson 1), ``sisa`` (lesson 2), ``legonet`` (lesson 3)
"""

__version__ = "0.1.0"
