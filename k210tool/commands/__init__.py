"""The operations users run, one module each: ``convert``, ``check``, ``rewrite``, ``compare``, ``testboard``
(``k210tool test-board``), ``demo``. Each takes a frozen options dataclass and returns a result dataclass; the
library never prints (progress goes through a :class:`~k210tool.report.Reporter`). The CLI in
:mod:`k210tool.cli` only parses flags, calls these functions and renders what they return; the stages they share
live in the packages below them (:mod:`k210tool.compile.pipeline`, :mod:`k210tool.compile.calibration_source`,
:mod:`k210tool.preprocess`, :mod:`k210tool.boards`)."""
