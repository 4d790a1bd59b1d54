"""course_lib: the small library under the machine-unlearning course.

Where everything lives (a newcomer finds any method in one obvious file). The modules form layers:
each imports only from the layers above it, never back, not even inside a function
(``tests/test_layers.py`` checks the import graph for cycles).

Foundation
    ``config``       FAST switch, seeds (``derive_seed``: named random streams), paths, and the run's
                     ``Budget`` (``config.budget()``: the smoke caps, read by the loops and the cost models)
    ``device``       device choice, banner, ``exact_numerics`` for bitwise-reproducible sections
    ``validation``   every input check and ``NotFittedError`` (one wording for the whole library)
Parameters
    ``params``       a leaf: ``Params``/``Mask``, ``snapshot``, ``restore_masked``, ``eval_mode``,
                     ``global_topk``, ``mean_loss_gradient``, ``empirical_fisher_diagonal`` /
                     ``true_fisher_diagonal``, and the course's one ``accuracy``
Data and models
    ``data``         data sets (digits offline; CIFAR-10/100, SVHN) and forget sets
    ``models``       SmallCNN, MLP, ResNet-18 (CIFAR stem), ``seeded``, ``reset_parameters``
The two training loops
    ``engine``       many small models at once (stacks, SISA shards, LegoNet adapters): slots, batch
                     plans, the masked SGD step, the schedule; ``Stopwatch``, ``TrainLog``, ``progress``
    ``fastpath``     the GPU numerics of the one-model loop: data resident on the device, on-device
                     augmentation, bf16, channels_last, optional torch.compile, fast evaluation
    ``train``        the one SGD loop for one model (``sgd_steps`` + loss closures), ``fit``, prediction
Built on the loops
    ``stacked``      populations of models trained together (on the engine)
    ``dp``           DP-SGD: one model (opacus) and stacks, with the privacy accountant
    ``masks``        everything that returns a parameter mask: the operations (``masks/ops.py``), SalUn's
                     saliency (``masks/salient.py``), pruning (``masks/pruning.py``), localisation
                     (``masks/localization.py``)
Methods and measurements
    ``unlearn``      the registry (``unlearn/registry.py``: ``@register``, ``unlearn(...)``) and one file
                     per family (below); ``compare``; ``tuned(method, scenario)`` reads the one table of
                     settings (``unlearn/tuning.py`` + ``tuned.json``)
    ``exact``        exact unlearning (below): estimators in the scikit-learn style, cost models
    ``audit``        the ε audit of a definition (populations of models)
    ``metrics``      UA, RA, TA, MIA-Efficacy / MIA-Privacy, disparity to Retrain, tables
    ``scenarios``    the course's forgetting scenarios (random, class, noniid, mislabeled, backdoor):
                     data, forget set and the original's recipe, memorising in FAST mode
The capstone
    ``challenge``    the unlearning challenge (a08) scored by the NeurIPS 2023 competition's rule:
                     splits and cached populations (``challenge/protocol.py``), running and scoring a
                     submission under a compute budget, the baselines (``challenge/scoring.py``), the
                     class leaderboard (``challenge/board.py``)
Presentation
    ``plots``        shared figures, decision-space plots (``plots.explorer`` re-exports the explorer)
    ``explorer``     the lectures' ipywidgets explorers; headless (``COURSE_HEADLESS=1``): a static view
    ``embedding``    one 2-D embedding shared by several models' views of the same points (lesson 4)
    ``claims``       a source's claims judged over seeds (verdicts, JSON bundle), the settings table
    ``nbrun``        executing a notebook that cannot hang (child process, per-cell and notebook timeouts)
    ``grading``      graded notebooks: student code in a sandbox, tests in a trusted process, nbgrader I/O

Unlearning methods, one file per family (``unlearn/``)
    ``baselines.py``     Retrain, FT, GA, NegGrad+, Random Label, l1-sparse        lessons 0, 1, 6
    ``boundary.py``      Boundary Shrink, Boundary Expanding                      lesson 4
    ``salun.py``         SalUn                                                     lesson 5
    ``second_order.py``  Fisher forgetting, influence unlearning                  lessons 5, 6
    ``localization.py``  Reset + Finetune, DEL, SSD                               lesson 7

Exact unlearning (``exact/``): one protocol, a report type per estimator, cost models as pure functions
    ``ridge.py``    closed-form removal                                              lesson 1
    ``sisa.py``     SISA (``sharding.py``, ``checkpoints.py``, ``shard_training.py``)  lesson 2
    ``legonet.py``  LegoNet (``encoders.py``, ``adapters.py``)                       lesson 3
    ``costs.py``    what a request costs, in samples and steps, under the run's ``Budget``
"""

__version__ = "0.2.0"
