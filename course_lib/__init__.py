"""course_lib: the small library under the machine-unlearning course.

Where everything lives (a newcomer finds any method in one obvious file):

Foundation
    ``config``       FAST switch, seeds (``derive_seed``: named random streams), paths
    ``device``       device choice, banner, ``exact_numerics`` for bitwise-reproducible sections
    ``validation``   every input check and ``NotFittedError`` (one wording for the whole library)
    ``data``         data sets (digits offline; CIFAR-10/100, SVHN) and forget sets
    ``scenarios``    the course's forgetting scenarios (random, class, noniid, mislabeled, backdoor):
                     data, forget set and the original's recipe, memorising in FAST mode
    ``models``       SmallCNN, MLP, ResNet-18 (CIFAR stem)
    ``train``        the one SGD loop for one model (``sgd_steps`` + loss closures), prediction
    ``fastpath``     the same training on a GPU: data resident on the device, on-device augmentation,
                     bf16, channels_last, optional torch.compile (``train.fit`` hands over on CUDA)
    ``engine``       training many small models at once: slots, batch plans, masked SGD step, schedule
    ``masks``        everything that returns a parameter mask: the operations, SalUn's saliency
                     (``masks/salient.py``), pruning (``masks/pruning.py``), localisation (``masks/localization.py``)
    ``metrics``      UA, RA, TA, MIA-Efficacy / MIA-Privacy, disparity to Retrain, tables
    ``plots``        shared figures, decision-space plots (``plots.explorer`` re-exports the explorer)
    ``explorer``     the lectures' ipywidgets explorers; headless (``COURSE_HEADLESS=1``): a static view
    ``claims``       a source's claims judged over seeds (verdicts, JSON bundle), the settings table
    ``grading``      graded notebooks: student code in a sandbox, tests in a trusted process, nbgrader I/O
    ``nbrun``        executing a notebook that cannot hang (child process, per-cell and notebook timeouts)

Unlearning methods: ``unlearn`` (registry, ``unlearn(...)``, ``compare(...)``; ``tuned(method, scenario)``
    reads the one table of settings, ``unlearn/tuning.py`` + ``tuned.json``), one file per family
    ``unlearn/baselines.py``     Retrain, FT, GA, NegGrad+, Random Label, l1-sparse        lessons 0, 1, 6
    ``unlearn/boundary.py``      Boundary Shrink, Boundary Expanding                      lesson 4
    ``unlearn/salun.py``         SalUn                                                     lesson 5
    ``unlearn/second_order.py``  Fisher forgetting, influence unlearning                  lessons 5, 6
    ``unlearn/localised.py``     Reset + Finetune, DEL, SSD                               lesson 7

Definitions (lesson 1): ``audit`` (the ε audit), ``stacked`` (populations of models), ``dp`` (DP-SGD)

Exact unlearning: ``exact`` (one protocol, one report type, cost models as pure functions)
    ``exact/ridge.py``    closed-form removal                                              lesson 1
    ``exact/sisa.py``     SISA (``sharding.py``, ``checkpoints.py``)                        lesson 2
    ``exact/legonet.py``  LegoNet (``encoders.py``, ``adapters.py``)                       lesson 3
    ``exact/costs.py``    what a request costs, in samples and steps
"""

__version__ = "0.2.0"
