"""The student and instructor editions differ exactly in their solutions."""
import re

import nbformat
import pytest
import yaml

from conftest import ROOT, toc_pages
from editions import main, strip_solutions, strip_solutions_text, student_config

NOTEBOOKS = sorted(ROOT.glob("book/*.ipynb")) + sorted(ROOT.glob("notebooks/*.ipynb"))
SOLUTION = 'class="solution dropdown admonition"'
EXERCISE = 'class="exercise admonition"'


def solution_lines(markdown: str) -> set[int]:
    """Numbers of the lines inside {solution} directives, fences included: a plain scan that
    does not share code with the module under test."""
    found, fence = set(), None
    for number, line in enumerate(markdown.splitlines()):
        opening = re.match(r"(`{3,}|:{3,})\{solution\}", line)
        if fence is None and opening:
            fence = opening[1]
        elif fence is not None and line.strip() == fence:
            found.add(number)
            fence = None
        if fence is not None:
            found.add(number)
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_student_notebook_differs_only_by_its_solutions(path):
    teacher = nbformat.read(path, as_version=4)
    student = strip_solutions(teacher)
    assert student.metadata == teacher.metadata
    kept = iter(student.cells)
    for cell in teacher.cells:
        removable = solution_lines(cell.source) if cell.cell_type == "markdown" else set()
        lines = cell.source.splitlines()
        if removable and all(n in removable for n, line in enumerate(lines) if line.strip()):
            continue  # a cell that held only solutions is dropped
        twin = next(kept)
        assert (twin.cell_type, twin.get("id"), twin.get("outputs")) == (
            cell.cell_type, cell.get("id"), cell.get("outputs"))
        # Line by line, blank lines aside: the teacher's lines outside solutions, in order.
        expected = [line for number, line in enumerate(lines)
                    if number not in removable and line.strip()]
        assert [line for line in twin.source.splitlines() if line.strip()] == expected
        assert "{solution}" not in twin.source
        assert twin.source.count("{exercise}") == cell.source.count("{exercise}")
    assert next(kept, None) is None


def test_strip_cli_writes_every_notebook_at_its_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    relative = [str(p.relative_to(ROOT)) for p in NOTEBOOKS]
    main(["strip", "--out", str(tmp_path), *relative])
    for path in relative:
        copy = nbformat.read(tmp_path / path, as_version=4)
        nbformat.validate(copy)
        text = "".join(c.source for c in copy.cells)
        assert "{solution}" not in text and text.count("{exercise}") > 0, path


def test_strip_solutions_text_keeps_exercises_and_other_fences():
    text = ("Intro\n\n```{exercise}\n:label: e1\n\nDo it.\n```\n\n"
            "````{solution} e1\n:class: dropdown\n\n```python\nx = 1\n```\n````\n\n"
            ":::{solution} e1\nalso\n:::\n\n```{note}\nkept\n```\n")
    assert strip_solutions_text(text) == (
        "Intro\n\n```{exercise}\n:label: e1\n\nDo it.\n```\n\n```{note}\nkept\n```\n")
    assert strip_solutions_text("no directives") == "no directives"
    with pytest.raises(ValueError, match="unclosed"):
        strip_solutions_text("```{solution} e1\nnever closed\n")
    with pytest.raises(ValueError, match="gated"):
        strip_solutions_text("```{solution-start} e1\n```\n")


def test_student_config_hides_solutions_and_shares_the_cache(tmp_path):
    config = {"execute": {"execute_notebooks": "cache"}, "sphinx": {"config": {"a": 1}}}
    student = student_config(config, tmp_path / "cache")
    assert student["sphinx"]["config"] == {"a": 1, "hide_solutions": True}
    assert student["execute"]["cache"] == str((tmp_path / "cache").resolve())
    assert student["repository"]["branch"] == "student"
    assert "hide_solutions" not in config["sphinx"]["config"], "the input is left unchanged"

    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    main(["student-config", str(tmp_path / "_config.yml"), str(tmp_path / "student/_config.yml"),
          "--cache", str(tmp_path / "cache")])
    assert yaml.safe_load((tmp_path / "student/_config.yml").read_text()) == student


def test_student_html_has_no_solutions_and_the_instructor_html_has_them(book_html, student_html):
    with_solutions = 0
    for page in toc_pages():
        teacher = (book_html / f"{page}.html").read_text(encoding="utf-8")
        student = (student_html / f"{page}.html").read_text(encoding="utf-8")
        assert not re.search(r'class="[^"]*\bsolution\b', student), page
        assert student.count(EXERCISE) == teacher.count(EXERCISE), page
        with_solutions += teacher.count(SOLUTION) > 0
        if teacher.count(SOLUTION):
            assert teacher.count(SOLUTION) == teacher.count(EXERCISE), page
    assert with_solutions > 0, "the instructor edition shows no solution at all"


def test_student_html_offers_no_solution_for_download(book_html, student_html):
    def sources(html):
        return {p.relative_to(html): p.read_text(encoding="utf-8")
                for p in (html / "_sources").rglob("*") if p.suffix in (".ipynb", ".md")}

    teacher, student = sources(book_html), sources(student_html)
    assert teacher.keys() == student.keys()
    assert any("{solution}" in text for text in teacher.values())
    assert not [path for path, text in student.items() if "{solution}" in text]


def test_student_colab_buttons_open_the_student_branch(book_html, student_html):
    for page in toc_pages():
        teacher = (book_html / f"{page}.html").read_text(encoding="utf-8")
        student = (student_html / f"{page}.html").read_text(encoding="utf-8")
        colab = re.findall(r'https://colab\.research\.google\.com/github/[^"]+', student)
        assert len(colab) == teacher.count("https://colab.research.google.com/github/"), page
        assert all("/blob/student/" in url for url in colab), page


def test_strip_refuses_a_folder_of_someone_elses_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    (tmp_path / "thesis.txt").write_text("mine")
    relative = str(NOTEBOOKS[0].relative_to(ROOT))
    with pytest.raises(SystemExit) as stop:
        main(["strip", "--out", str(tmp_path), relative])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.txt"]
    with pytest.raises(SystemExit):
        main(["student-config", str(ROOT / "_config.yml"), str(tmp_path / "_config.yml")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.txt"]


def test_student_config_then_strip_share_one_claimed_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "student"
    main(["student-config", str(ROOT / "_config.yml"), str(out / "_config.yml")])
    main(["strip", "--out", str(out), str(NOTEBOOKS[0].relative_to(ROOT))])
    assert (out / NOTEBOOKS[0].relative_to(ROOT)).is_file() and (out / "_config.yml").is_file()
