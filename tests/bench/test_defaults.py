"""The benchmarks' default bundles are the project's default students."""

from bench.defaults import STUDENT_K4, STUDENT_K8, STUDENTS
from tests.defaults import student, students


def test_the_benchmarks_load_the_makefiles_default_students():
    assert sorted(STUDENTS) == sorted(students())
    assert (STUDENT_K4, STUDENT_K8) == (student(4), student(8))
