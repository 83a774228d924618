"""The bundles a benchmark loads when told none: the project's default students (the Makefile's
STUDENTS, the distillation table's winners at K = 4 and 8; tests/bench/test_defaults.py keeps them
equal). One home, so that a new winner renames them here only."""

from __future__ import annotations

STUDENT_K4 = "pd-k4"
STUDENT_K8 = "mm-alt-k8"
STUDENTS = (STUDENT_K4, STUDENT_K8)
